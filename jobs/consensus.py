"""Adaptive consensus: after each judgment, the task's posterior over answers decides whether
to close it, ask one more worker, or escalate.

Each vote is weighted by its worker's estimated accuracy (a one-coin model: right with
probability a, otherwise any other label alike); a model pre-label is one more vote whose
accuracy is its calibrated confidence. Pure functions: the caller loads votes and applies
the decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

# A new worker's accuracy before evidence: Beta(α, β) prior with mean 0.7, worth 5 answers.
PRIOR_CORRECT = 3.5
PRIOR_WRONG = 1.5
# Accuracies are clipped so one vote can never be certain.
MIN_ACCURACY = 0.05
MAX_ACCURACY = 0.99


class Decision(StrEnum):
    CLOSE = "close"  # confident enough: final answer
    EXTEND = "extend"  # ask one more worker
    ESCALATE = "escalate"  # maximum reached without agreement: review


@dataclass(frozen=True)
class Vote:
    answer: str  # a canonical answer key (see jobs.answers.canonical)
    accuracy: float


@dataclass(frozen=True)
class Posterior:
    probabilities: dict[str, float]

    @property
    def best(self) -> tuple[str, float]:
        answer = max(self.probabilities, key=lambda k: (self.probabilities[k], k))
        return answer, self.probabilities[answer]


def estimated_accuracy(correct: int, wrong: int) -> float:
    """Posterior mean of a worker's accuracy under the Beta prior."""
    return (PRIOR_CORRECT + correct) / (PRIOR_CORRECT + PRIOR_WRONG + correct + wrong)


def accuracy_interval(correct: int, wrong: int, z: float = 1.96) -> tuple[float, float]:
    """An approximate 95 % interval for the accuracy (Wilson-style on the smoothed counts)."""
    a, b = PRIOR_CORRECT + correct, PRIOR_WRONG + wrong
    n = a + b
    p = a / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def posterior(votes: list[Vote], labels: list[str] | None = None) -> Posterior:
    """P(true answer = k | votes) with a uniform prior over `labels` (or the answers seen)."""
    candidates = list(dict.fromkeys([*(labels or []), *(v.answer for v in votes)]))
    if not candidates:
        return Posterior({})
    k = max(len(candidates), 2)
    log_scores = dict.fromkeys(candidates, 0.0)
    for vote in votes:
        a = min(MAX_ACCURACY, max(MIN_ACCURACY, vote.accuracy))
        right, wrong = math.log(a), math.log((1 - a) / (k - 1))
        for candidate in candidates:
            log_scores[candidate] += right if candidate == vote.answer else wrong
    top = max(log_scores.values())
    weights = {c: math.exp(s - top) for c, s in log_scores.items()}
    total = sum(weights.values())
    return Posterior({c: w / total for c, w in weights.items()})


def decide(
    votes: list[Vote],
    *,
    human_judgments: int,
    minimum: int,
    maximum: int,
    target_confidence: float,
    labels: list[str] | None = None,
) -> tuple[Decision, str | None, float]:
    """What to do with a task now: (decision, best answer, its posterior probability)."""
    result = posterior(votes, labels)
    if not result.probabilities:
        return Decision.EXTEND, None, 0.0
    answer, confidence = result.best
    if human_judgments >= minimum and confidence >= target_confidence:
        return Decision.CLOSE, answer, confidence
    if human_judgments < maximum:
        return Decision.EXTEND, answer, confidence
    return Decision.ESCALATE, answer, confidence

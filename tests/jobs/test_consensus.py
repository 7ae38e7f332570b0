from __future__ import annotations

import math

import pytest

from jobs.consensus import (
    Decision,
    Vote,
    accuracy_interval,
    decide,
    estimated_accuracy,
    posterior,
)


def test_estimated_accuracy_is_smoothed_for_newcomers():
    assert estimated_accuracy(0, 0) == pytest.approx(0.7)
    # three right answers do not make a worker perfect
    assert estimated_accuracy(3, 0) == pytest.approx(6.5 / 8)
    assert estimated_accuracy(95, 5) == pytest.approx(98.5 / 105)
    low, high = accuracy_interval(3, 0)
    assert low < estimated_accuracy(3, 0) < high
    narrow = accuracy_interval(300, 0)
    assert narrow[1] - narrow[0] < high - low


def test_posterior_hand_computed():
    # two labels, votes cat (a=0.9) and dog (a=0.6):
    # P(cat) ∝ 0.9 * 0.4 = 0.36 ; P(dog) ∝ 0.1 * 0.6 = 0.06 → 6/7
    result = posterior([Vote("cat", 0.9), Vote("dog", 0.6)], ["cat", "dog"])
    assert result.probabilities["cat"] == pytest.approx(6 / 7)
    assert result.best == ("cat", pytest.approx(6 / 7))


def test_three_labels_spread_the_wrong_mass():
    # k = 3: a wrong vote gives (1-a)/2 to each other label
    result = posterior([Vote("a", 0.8)], ["a", "b", "c"])
    assert result.probabilities == pytest.approx({"a": 0.8, "b": 0.1, "c": 0.1})


def test_closes_when_two_good_workers_agree():
    votes = [Vote("cat", 0.9), Vote("cat", 0.9)]
    decision, answer, confidence = decide(
        votes,
        human_judgments=2,
        minimum=2,
        maximum=5,
        target_confidence=0.95,
        labels=["cat", "dog"],
    )
    assert (decision, answer) == (Decision.CLOSE, "cat")
    assert confidence == pytest.approx(0.81 / (0.81 + 0.01))


def test_extends_on_disagreement_and_escalates_at_the_maximum():
    votes = [Vote("cat", 0.8), Vote("dog", 0.8)]
    decision, _, confidence = decide(
        votes,
        human_judgments=2,
        minimum=2,
        maximum=5,
        target_confidence=0.9,
        labels=["cat", "dog"],
    )
    assert decision == Decision.EXTEND and confidence == pytest.approx(0.5)
    decision, _, _ = decide(
        votes,
        human_judgments=5,
        minimum=2,
        maximum=5,
        target_confidence=0.9,
        labels=["cat", "dog"],
    )
    assert decision == Decision.ESCALATE


def test_minimum_judgments_hold_even_when_confident():
    decision, _, _ = decide(
        [Vote("cat", 0.99)],
        human_judgments=1,
        minimum=2,
        maximum=3,
        target_confidence=0.9,
        labels=["cat", "dog"],
    )
    assert decision == Decision.EXTEND


def test_a_confident_prelabel_saves_a_human():
    prelabel = Vote("cat", 0.95)
    human = Vote("cat", 0.8)
    decision, _, confidence = decide(
        [prelabel, human],
        human_judgments=1,
        minimum=1,
        maximum=3,
        target_confidence=0.98,
        labels=["cat", "dog"],
    )
    assert decision == Decision.CLOSE
    assert confidence == pytest.approx(0.76 / (0.76 + 0.01))


def test_a_spammer_barely_moves_the_posterior():
    good = [Vote("cat", 0.9), Vote("cat", 0.9)]
    spam = Vote("dog", 0.5)
    before = posterior(good, ["cat", "dog"]).probabilities["cat"]
    after = posterior([*good, spam], ["cat", "dog"]).probabilities["cat"]
    assert math.isclose(before, after, rel_tol=1e-9)


def test_no_votes():
    decision, answer, confidence = decide(
        [], human_judgments=0, minimum=1, maximum=3, target_confidence=0.9
    )
    assert (decision, answer, confidence) == (Decision.EXTEND, None, 0.0)

"""Batch aggregation: turn a job's redundant judgments into labels with a confidence.

Pure computation on integer-coded arrays, no database: the caller maps tasks, workers and
answers to indices ``0..n-1``, calls one of the aggregators and writes back the labels with
their confidence and the method that produced them.

* `weighted_majority_vote` — each vote counts with its worker's weight.
* `dawid_skene` — Dawid & Skene (1979): every worker has a confusion matrix
  ``P(answer l | true label k)``, fitted by EM together with the class priors.
* `one_coin_dawid_skene` — the same EM where a worker has a single accuracy and spreads
  mistakes evenly over the other labels (the model `jobs.consensus` uses online).

The EM is vectorised: with ``M`` the sparse ``n_tasks × (n_workers·n_labels)`` matrix counting
how often each worker gave each answer on each task (the task incidence matrix times the
one-hot worker-answer matrix of the judgments), the E-step is ``M @ log Θ`` and the M-step is
``Mᵀ @ posterior``, where ``Θ`` stacks the confusion matrices: one sparse product each, no
Python loop over judgments. Confusion matrices and priors get Dirichlet pseudo-counts so that
a worker with three judgments does not get a degenerate (all-or-nothing) matrix, and
everything is done in log space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from jobs.consensus import PRIOR_CORRECT, PRIOR_WRONG

# Probabilities are floored here before taking logs (only reachable with zero smoothing).
_TINY = 1e-300

Method = Literal["majority_vote", "dawid_skene", "one_coin_dawid_skene"]


@dataclass(frozen=True)
class MajorityVote:
    """Weighted vote shares per task; a task without votes has label -1 and confidence 0."""

    shares: np.ndarray  # (n_tasks, n_labels): each label's share of the task's vote weight
    labels: np.ndarray  # (n_tasks,) int64; ties go to the lowest label index
    confidence: np.ndarray  # (n_tasks,) the winning share
    judgments_per_task: np.ndarray  # (n_tasks,) int64
    method: Method = "majority_vote"


@dataclass(frozen=True)
class Aggregation:
    """The result of an EM aggregation."""

    posterior: np.ndarray  # (n_tasks, n_labels): P(true label = k | judgments, gold)
    labels: np.ndarray  # (n_tasks,) int64 MAP label; ties go to the lowest label index
    confidence: np.ndarray  # (n_tasks,) the MAP label's posterior probability
    confusion: np.ndarray  # (n_workers, n_labels, n_labels): [w, true k, answer l]
    class_prior: np.ndarray  # (n_labels,)
    worker_accuracy: np.ndarray  # (n_workers,) P(right answer), averaged over class_prior
    judgments_per_task: np.ndarray  # (n_tasks,) int64
    iterations: int  # EM iterations run (M-step + E-step pairs)
    converged: bool  # False when max_iter stopped it first
    log_likelihood: float  # log P(judgments, gold labels | final parameters)
    log_likelihood_history: tuple[float, ...]  # after each iteration
    method: Method


@dataclass(frozen=True)
class _Judgments:
    """Validated judgments and the sparse matrices both EM steps multiply by."""

    n_tasks: int
    n_workers: int
    n_labels: int
    n_judgments: int
    counts: sp.csr_matrix  # M: (n_tasks, n_workers * n_labels)
    per_task: np.ndarray
    per_worker: np.ndarray
    gold_tasks: np.ndarray
    gold_labels: np.ndarray
    # 1.0 for the tasks that inform the class prior (judged or gold), else 0.0
    observed: np.ndarray
    votes: np.ndarray  # (n_tasks, n_labels) judgments per label


def weighted_majority_vote(
    task_index: np.ndarray,
    worker_index: np.ndarray,
    label_index: np.ndarray,
    *,
    n_tasks: int,
    n_workers: int,
    n_labels: int,
    worker_weights: np.ndarray | None = None,
) -> MajorityVote:
    """Majority vote where each worker's votes count with `worker_weights` (default 1)."""
    tasks, workers, labels = _validate_indices(
        task_index, worker_index, label_index, n_tasks, n_workers, n_labels
    )
    if worker_weights is None:
        weights = None
    else:
        worker_weights = _float_vector(worker_weights, n_workers, "worker_weights")
        if (worker_weights < 0).any():
            raise ValueError("worker_weights must be non-negative")
        weights = worker_weights[workers]
    scores = (
        np.bincount(tasks * n_labels + labels, weights=weights, minlength=n_tasks * n_labels)
        .reshape(n_tasks, n_labels)
        .astype(np.float64)
    )
    totals = scores.sum(axis=1)
    voted = totals > 0
    shares = np.zeros_like(scores)
    shares[voted] = scores[voted] / totals[voted, None]
    winners = np.where(voted, shares.argmax(axis=1), -1)
    return MajorityVote(
        shares=shares,
        labels=winners.astype(np.int64),
        confidence=shares.max(axis=1, initial=0.0),
        judgments_per_task=np.bincount(tasks, minlength=n_tasks).astype(np.int64),
    )


def dawid_skene(
    task_index: np.ndarray,
    worker_index: np.ndarray,
    label_index: np.ndarray,
    *,
    n_tasks: int,
    n_workers: int,
    n_labels: int,
    gold_tasks: np.ndarray | None = None,
    gold_labels: np.ndarray | None = None,
    initial_accuracy: np.ndarray | float | None = None,
    initial_prior: np.ndarray | None = None,
    smoothing: float | np.ndarray | None = None,
    prior_smoothing: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> Aggregation:
    """Dawid–Skene EM: per-worker confusion matrices, class priors and task posteriors.

    Judgment ``i`` says worker ``worker_index[i]`` answered ``label_index[i]`` on task
    ``task_index[i]``. Gold tasks keep their known label throughout (and teach the workers'
    matrices). EM starts from the majority-vote shares, or — given `initial_accuracy` per
    worker (e.g. smoothed gold accuracy) and optionally `initial_prior` — from the one-coin
    posterior under them. `smoothing` holds the Dirichlet pseudo-counts added to each
    worker's expected confusion counts: a scalar for every cell, an ``n_labels × n_labels``
    array, or by default `confusion_prior` (the online model's accuracy prior, so a new
    worker counts as a fairly good one rather than as noise); `prior_smoothing` is the
    pseudo-count added to each class. Stops when the log-likelihood per judgment changes by
    less than `tol`, or after `max_iter` iterations.
    """
    data = _prepare(
        task_index, worker_index, label_index, n_tasks, n_workers, n_labels, gold_tasks,
        gold_labels,
    )  # fmt: skip
    alpha = _confusion_pseudo_counts(smoothing, n_labels)
    return _expectation_maximisation(
        data,
        _initial_posterior(data, initial_accuracy, initial_prior),
        lambda posterior: _full_m_step(data, posterior, alpha),
        prior_smoothing=_non_negative(prior_smoothing, "prior_smoothing"),
        max_iter=max_iter,
        tol=tol,
        method="dawid_skene",
    )


def one_coin_dawid_skene(
    task_index: np.ndarray,
    worker_index: np.ndarray,
    label_index: np.ndarray,
    *,
    n_tasks: int,
    n_workers: int,
    n_labels: int,
    gold_tasks: np.ndarray | None = None,
    gold_labels: np.ndarray | None = None,
    initial_accuracy: np.ndarray | float | None = None,
    initial_prior: np.ndarray | None = None,
    smoothing: tuple[float, float] = (PRIOR_CORRECT, PRIOR_WRONG),
    prior_smoothing: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> Aggregation:
    """EM where each worker has one accuracy and spreads mistakes evenly over other labels.

    Far fewer parameters than `dawid_skene` (one per worker instead of ``n_labels²``), so it
    suits workers with few judgments. `smoothing` is the Beta pseudo-count pair
    (right, wrong) added to each worker's expected counts, by default the online model's
    accuracy prior. Other arguments as `dawid_skene`.
    """
    data = _prepare(
        task_index, worker_index, label_index, n_tasks, n_workers, n_labels, gold_tasks,
        gold_labels,
    )  # fmt: skip
    right, wrong = (_non_negative(s, "smoothing") for s in smoothing)
    return _expectation_maximisation(
        data,
        _initial_posterior(data, initial_accuracy, initial_prior),
        lambda posterior: _one_coin_m_step(data, posterior, right, wrong),
        prior_smoothing=_non_negative(prior_smoothing, "prior_smoothing"),
        max_iter=max_iter,
        tol=tol,
        method="one_coin_dawid_skene",
    )


def confusion_prior(
    n_labels: int, correct: float = PRIOR_CORRECT, wrong: float = PRIOR_WRONG
) -> np.ndarray:
    """Dirichlet pseudo-counts for each row of a confusion matrix: `correct` on the diagonal,
    `wrong` spread evenly over the other answers (by default `jobs.consensus`'s Beta prior)."""
    if n_labels == 1:
        return np.full((1, 1), float(correct))
    pseudo = np.full((n_labels, n_labels), wrong / (n_labels - 1))
    np.fill_diagonal(pseudo, correct)
    return pseudo


def one_coin_confusion(accuracy: np.ndarray, n_labels: int) -> np.ndarray:
    """Confusion matrices (n_workers, n_labels, n_labels) of one-coin workers."""
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if n_labels == 1:
        return np.ones((accuracy.size, 1, 1))
    wrong = (1.0 - accuracy) / (n_labels - 1)
    confusion = np.repeat(wrong[:, None, None], n_labels, axis=1).repeat(n_labels, axis=2)
    diagonal = np.arange(n_labels)
    confusion[:, diagonal, diagonal] = accuracy[:, None]
    return confusion


# --- EM ----------------------------------------------------------------------------------


def _expectation_maximisation(
    data: _Judgments,
    posterior: np.ndarray,
    m_step: Callable[[np.ndarray], np.ndarray],
    *,
    prior_smoothing: float,
    max_iter: int,
    tol: float,
    method: Method,
) -> Aggregation:
    if max_iter < 1:
        raise ValueError("max_iter must be at least 1")
    if tol < 0:
        raise ValueError("tol must be non-negative")
    history: list[float] = []
    converged = False
    scale = max(data.n_judgments, 1)
    for _ in range(max_iter):
        confusion = m_step(posterior)
        prior = _class_prior(data, posterior, prior_smoothing)
        posterior, log_likelihood = _e_step(data, confusion, prior)
        history.append(log_likelihood)
        if len(history) > 1 and abs(history[-1] - history[-2]) <= tol * scale:
            converged = True
            break
    labels = posterior.argmax(axis=1).astype(np.int64)
    diagonal = np.arange(data.n_labels)
    return Aggregation(
        posterior=posterior,
        labels=labels,
        confidence=posterior[np.arange(data.n_tasks), labels],
        confusion=confusion,
        class_prior=prior,
        worker_accuracy=confusion[:, diagonal, diagonal] @ prior,
        judgments_per_task=data.per_task,
        iterations=len(history),
        converged=converged,
        log_likelihood=history[-1],
        log_likelihood_history=tuple(history),
        method=method,
    )


def _e_step(data: _Judgments, confusion: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, float]:
    """Posterior over true labels per task, and the log-likelihood of the judgments."""
    # row w·L + l of log_theta holds log P(answer l | true k) for k = 0..L-1
    log_theta = np.log(np.maximum(confusion, _TINY)).transpose(0, 2, 1)
    log_theta = log_theta.reshape(data.n_workers * data.n_labels, data.n_labels)
    scores = data.counts @ log_theta
    scores += np.log(np.maximum(prior, _TINY))
    # log-sum-exp per row. numpy reduces a short axis=1 slowly, so the max goes column by
    # column and sums go through einsum: a matrix product would call BLAS, whose threads
    # thrash on a busy machine (here and below)
    top = scores[:, 0].copy()
    for k in range(1, data.n_labels):
        np.maximum(top, scores[:, k], out=top)
    scores -= top[:, None]
    np.exp(scores, out=scores)
    totals = np.einsum("ij->i", scores)
    log_evidence = top + np.log(totals)
    posterior = scores
    posterior /= totals[:, None]
    if data.gold_tasks.size:
        # a gold task contributes log P(judgments, known label), not the marginal
        known = posterior[data.gold_tasks, data.gold_labels]
        log_evidence[data.gold_tasks] += np.log(np.maximum(known, _TINY))
        posterior[data.gold_tasks] = 0.0
        posterior[data.gold_tasks, data.gold_labels] = 1.0
    return posterior, float(np.einsum("i,i->", log_evidence, data.observed))


def _expected_counts(data: _Judgments, posterior: np.ndarray) -> np.ndarray:
    """Expected counts (n_workers, true k, answer l) under the posterior."""
    # Mᵀ is M's CSC view: the product streams through the tasks and scatters into a small,
    # cache-resident (n_workers·n_labels, n_labels) result
    counts = data.counts.T @ posterior  # row w·L + l, column k
    return counts.reshape(data.n_workers, data.n_labels, data.n_labels).transpose(0, 2, 1)


def _full_m_step(data: _Judgments, posterior: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    counts = _expected_counts(data, posterior) + alpha
    totals = counts.sum(axis=2, keepdims=True)
    # a row with no evidence and no pseudo-counts says nothing: uniform
    return np.divide(
        counts, totals, out=np.full_like(counts, 1.0 / data.n_labels), where=totals > 0
    )


def _one_coin_m_step(
    data: _Judgments, posterior: np.ndarray, right: float, wrong: float
) -> np.ndarray:
    diagonal = np.arange(data.n_labels)
    correct = _expected_counts(data, posterior)[:, diagonal, diagonal].sum(axis=1)
    total = data.per_worker + right + wrong
    # a worker with no judgments and no pseudo-counts says nothing: chance accuracy
    accuracy = np.full(data.n_workers, 1.0 / data.n_labels)
    np.divide(correct + right, total, out=accuracy, where=total > 0)
    return one_coin_confusion(accuracy, data.n_labels)


def _class_prior(data: _Judgments, posterior: np.ndarray, smoothing: float) -> np.ndarray:
    counts = np.einsum("i,ij->j", data.observed, posterior) + smoothing
    total = counts.sum()
    if total <= 0:  # nothing observed and no smoothing
        return np.full(data.n_labels, 1.0 / data.n_labels)
    return counts / total


def _initial_posterior(
    data: _Judgments,
    initial_accuracy: np.ndarray | float | None,
    initial_prior: np.ndarray | None,
) -> np.ndarray:
    """Majority-vote shares, or the one-coin posterior under the given accuracies."""
    n_tasks, n_labels = data.n_tasks, data.n_labels
    if initial_accuracy is None:
        if initial_prior is not None:
            raise ValueError("initial_prior is only used together with initial_accuracy")
        votes = data.votes
        totals = votes.sum(axis=1, keepdims=True)
        posterior = np.divide(
            votes, totals, out=np.full((n_tasks, n_labels), 1.0 / n_labels), where=totals > 0
        )
    else:
        accuracy = np.asarray(initial_accuracy, dtype=np.float64)
        if accuracy.ndim == 0:
            accuracy = np.full(data.n_workers, float(accuracy))
        if accuracy.shape != (data.n_workers,):
            raise ValueError(f"initial_accuracy must be one number or {data.n_workers}")
        if not np.isfinite(accuracy).all() or (accuracy <= 0).any() or (accuracy >= 1).any():
            raise ValueError("initial_accuracy must lie strictly between 0 and 1")
        if initial_prior is None:
            prior = np.full(n_labels, 1.0 / n_labels)
        else:
            prior = _float_vector(initial_prior, n_labels, "initial_prior")
            if (prior <= 0).any():
                raise ValueError("initial_prior must be positive")
            prior = prior / prior.sum()
        posterior, _ = _e_step(data, one_coin_confusion(accuracy, n_labels), prior)
    if data.gold_tasks.size:
        posterior[data.gold_tasks] = 0.0
        posterior[data.gold_tasks, data.gold_labels] = 1.0
    return posterior


# --- input --------------------------------------------------------------------------------


def _prepare(
    task_index, worker_index, label_index, n_tasks, n_workers, n_labels, gold_tasks, gold_labels
) -> _Judgments:
    tasks, workers, labels = _validate_indices(
        task_index, worker_index, label_index, n_tasks, n_workers, n_labels
    )
    gold_t, gold_l = _validate_gold(gold_tasks, gold_labels, n_tasks, n_labels)
    columns = workers * n_labels + labels
    counts = sp.csr_matrix(
        (np.ones(tasks.size), (tasks, columns)), shape=(n_tasks, n_workers * n_labels)
    )
    counts.sum_duplicates()
    per_task = np.bincount(tasks, minlength=n_tasks).astype(np.int64)
    observed = (per_task > 0).astype(np.float64)
    observed[gold_t] = 1.0
    return _Judgments(
        n_tasks=n_tasks,
        n_workers=n_workers,
        n_labels=n_labels,
        n_judgments=int(tasks.size),
        counts=counts,
        per_task=per_task,
        per_worker=np.bincount(workers, minlength=n_workers).astype(np.float64),
        gold_tasks=gold_t,
        gold_labels=gold_l,
        observed=observed,
        votes=np.bincount(tasks * n_labels + labels, minlength=n_tasks * n_labels)
        .reshape(n_tasks, n_labels)
        .astype(np.float64),
    )


def _validate_indices(task_index, worker_index, label_index, n_tasks, n_workers, n_labels):
    for name, n, minimum in (
        ("n_tasks", n_tasks, 0),
        ("n_workers", n_workers, 0),
        ("n_labels", n_labels, 1),
    ):
        if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < minimum:
            raise ValueError(f"{name} must be an integer of at least {minimum}")
    arrays = []
    for name, values, n in (
        ("task_index", task_index, n_tasks),
        ("worker_index", worker_index, n_workers),
        ("label_index", label_index, n_labels),
    ):
        array = np.asarray(values)
        if array.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional")
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} must hold integers")
        array = array.astype(np.int64, copy=False)
        if array.size and (array.min() < 0 or array.max() >= n):
            raise ValueError(f"{name} must lie in [0, {n})")
        arrays.append(array)
    if len({a.size for a in arrays}) != 1:
        raise ValueError("task_index, worker_index and label_index must have equal lengths")
    return arrays


def _validate_gold(gold_tasks, gold_labels, n_tasks, n_labels):
    if gold_tasks is None and gold_labels is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if gold_tasks is None or gold_labels is None:
        raise ValueError("gold_tasks and gold_labels go together")
    tasks, labels = (np.asarray(a) for a in (gold_tasks, gold_labels))
    if tasks.ndim != 1 or labels.shape != tasks.shape:
        raise ValueError("gold_tasks and gold_labels must be one-dimensional, of equal length")
    if tasks.size and not (
        np.issubdtype(tasks.dtype, np.integer) and np.issubdtype(labels.dtype, np.integer)
    ):
        raise ValueError("gold_tasks and gold_labels must hold integers")
    tasks, labels = tasks.astype(np.int64), labels.astype(np.int64)
    if tasks.size and (tasks.min() < 0 or tasks.max() >= n_tasks):
        raise ValueError(f"gold_tasks must lie in [0, {n_tasks})")
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"gold_labels must lie in [0, {n_labels})")
    if np.unique(tasks).size != tasks.size:
        raise ValueError("gold_tasks must not repeat a task")
    return tasks, labels


def _confusion_pseudo_counts(smoothing, n_labels: int) -> np.ndarray:
    if smoothing is None:
        return confusion_prior(n_labels)
    alpha = np.asarray(smoothing, dtype=np.float64)
    if alpha.ndim == 0:
        alpha = np.full((n_labels, n_labels), float(alpha))
    if alpha.shape != (n_labels, n_labels):
        raise ValueError("smoothing must be a scalar or an n_labels × n_labels array")
    if not np.isfinite(alpha).all() or (alpha < 0).any():
        raise ValueError("smoothing must be finite and non-negative")
    return alpha


def _non_negative(value, name: str) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and non-negative")
    return value


def _float_vector(values, n: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,) or not np.isfinite(array).all():
        raise ValueError(f"{name} must be {n} finite numbers")
    return array

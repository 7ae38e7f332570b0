from __future__ import annotations

import math

import numpy as np
import pytest

from jobs.aggregation import (
    confusion_prior,
    dawid_skene,
    one_coin_confusion,
    one_coin_dawid_skene,
    weighted_majority_vote,
)


@pytest.fixture(autouse=True)
def _clean():
    """Overrides the suite's per-test database wipe: this is pure computation, no app."""
    yield


# --- a hand-computed EM step -------------------------------------------------------------
#
# Two labels, three workers A, B, C (indices 0, 1, 2), four tasks:
#
#   task   A  B  C   majority-vote shares (the initial posterior T)
#   t0     0  0  0   (1,   0  )
#   t1     1  1  0   (1/3, 2/3)
#   t2     0  1  1   (1/3, 2/3)
#   t3     1  1  1   (0,   1  )
#
# M-step with Laplace smoothing (1 per confusion cell, 1 per class):
#   class counts Σ_t T = (5/3, 7/3)  →  π = (5/3+1, 7/3+1) / (4+2) = (4/9, 5/9)
#   A answered 0 on t0, t2 and 1 on t1, t3. Expected counts N[k, l] = Σ T[t, k] over its
#   answers l: N[0] = (1 + 1/3, 1/3 + 0) = (4/3, 1/3), N[1] = (2/3, 5/3); plus 1 each:
#     θ_A[0] = (7/3, 4/3) / (11/3) = (7/11, 4/11)     θ_A[1] = (5/3, 8/3) / (13/3) = (5/13, 8/13)
#   B answered 0 on t0 and 1 on t1, t2, t3: N[0] = (1, 2/3), N[1] = (0, 7/3):
#     θ_B[0] = (2, 5/3) / (11/3) = (6/11, 5/11)       θ_B[1] = (1, 10/3) / (13/3) = (3/13, 10/13)
#   C answered 0 on t0, t1 and 1 on t2, t3: the same counts as A, so θ_C = θ_A.
# E-step, unnormalised P(k, answers) = π_k Π_w θ_w[k, answer]:
#   t0: k=0  4/9 · 7/11 · 6/11 · 7/11 = 392/3993     k=1  5/9 · 5/13 · 3/13 · 5/13 = 125/6591
#       P(0) = 861224/1027599 ≈ 0.838093
#   t1: k=0  4/9 · 4/11 · 5/11 · 7/11 = 560/11979    k=1  5/9 · 8/13 · 10/13 · 5/13 = 2000/19773
#       P(0) = 560·2197 / (560·2197 + 2000·1331) = 15379/48654 ≈ 0.316089
#   t2: A0 B1 C1 has the same factors as t1 (θ_A = θ_C): P(0) = 15379/48654
#   t3: k=0  4/9 · 4/11 · 5/11 · 4/11 = 320/11979    k=1  5/9 · 8/13 · 10/13 · 8/13 = 3200/19773
#       P(0) = 320·2197 / (320·2197 + 3200·1331) = 2197/15507 ≈ 0.141678
# log-likelihood = Σ_t log Σ_k P(k, answers) ≈ -7.635286

HAND_TASKS = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
HAND_WORKERS = [0, 1, 2] * 4
HAND_LABELS = [0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1]
HAND_SHAPE = {"n_tasks": 4, "n_workers": 3, "n_labels": 2}


def test_one_em_step_matches_the_hand_computation():
    result = dawid_skene(
        HAND_TASKS, HAND_WORKERS, HAND_LABELS, **HAND_SHAPE,
        smoothing=1.0, prior_smoothing=1.0, max_iter=1,
    )  # fmt: skip
    assert result.iterations == 1
    assert not result.converged
    np.testing.assert_allclose(result.class_prior, [4 / 9, 5 / 9], atol=1e-6)
    a = [[7 / 11, 4 / 11], [5 / 13, 8 / 13]]
    b = [[6 / 11, 5 / 11], [3 / 13, 10 / 13]]
    np.testing.assert_allclose(result.confusion, [a, b, a], atol=1e-6)
    p_zero = [861224 / 1027599, 15379 / 48654, 15379 / 48654, 2197 / 15507]
    np.testing.assert_allclose(result.posterior[:, 0], p_zero, atol=1e-6)
    np.testing.assert_allclose(result.posterior.sum(axis=1), 1.0, atol=1e-12)
    assert result.posterior[0, 0] == pytest.approx(0.838093, abs=1e-6)
    assert result.log_likelihood == pytest.approx(-7.635286, abs=1e-6)
    assert result.labels.tolist() == [0, 1, 1, 1]
    np.testing.assert_allclose(result.confidence, [p_zero[0], *(1 - p for p in p_zero[1:])])
    # accuracy averaged over the class prior: 4/9 · 7/11 + 5/9 · 8/13 for A
    assert result.worker_accuracy[0] == pytest.approx(4 / 9 * 7 / 11 + 5 / 9 * 8 / 13)
    assert result.method == "dawid_skene"
    assert result.judgments_per_task.tolist() == [3, 3, 3, 3]


def test_gold_is_clamped_from_the_start_and_teaches_the_workers():
    # t2 is gold with label 0: its initial posterior is (1, 0) instead of (1/3, 2/3)
    result = dawid_skene(
        HAND_TASKS, HAND_WORKERS, HAND_LABELS, **HAND_SHAPE,
        gold_tasks=[2], gold_labels=[0], smoothing=1.0, max_iter=1,
    )  # fmt: skip
    assert result.posterior[2].tolist() == [1.0, 0.0]
    assert result.labels[2] == 0 and result.confidence[2] == 1.0
    # class counts (1 + 1/3 + 1 + 0, 0 + 2/3 + 0 + 1) = (7/3, 5/3) → π = (10/18, 8/18)
    np.testing.assert_allclose(result.class_prior, [5 / 9, 4 / 9])
    # A answered 0 on t0 and the gold t2: N_A[0] = (1 + 1, 1/3 + 0) → θ_A[0] = (3, 4/3) / (13/3)
    np.testing.assert_allclose(result.confusion[0, 0], [9 / 13, 4 / 13])
    # the gold task's likelihood term is the joint with its known label, not the marginal
    joint = np.array(
        [
            [result.class_prior[k] * math.prod(result.confusion[w, k, HAND_LABELS[3 * t + w]]
                                               for w in range(3)) for k in range(2)]
            for t in range(4)
        ]
    )  # fmt: skip
    expected = np.log(joint[[0, 1, 3]].sum(axis=1)).sum() + np.log(joint[2, 0])
    assert result.log_likelihood == pytest.approx(expected, abs=1e-12)
    # and stays clamped through convergence, whatever the workers say
    converged = dawid_skene(
        HAND_TASKS, HAND_WORKERS, HAND_LABELS, **HAND_SHAPE, gold_tasks=[2], gold_labels=[0]
    )
    assert converged.posterior[2].tolist() == [1.0, 0.0]


def test_gold_without_judgments_counts_its_prior():
    # a gold task without judgments adds log π_gold; the judged task its marginal
    result = dawid_skene(
        [1], [0], [1], n_tasks=2, n_workers=1, n_labels=2,
        gold_tasks=[0], gold_labels=[0], max_iter=1,
    )  # fmt: skip
    prior, confusion = result.class_prior, result.confusion[0]
    evidence = prior[0] * confusion[0, 1] + prior[1] * confusion[1, 1]
    assert result.log_likelihood == pytest.approx(math.log(prior[0]) + math.log(evidence))


# --- against a plain-loop reference implementation ---------------------------------------


def reference_em(tasks, workers, labels, n_tasks, n_workers, n_labels, alpha, beta, iterations,
                 gold=None, one_coin=None):  # fmt: skip
    """The textbook EM, one judgment at a time."""
    gold = gold or {}
    posterior = np.full((n_tasks, n_labels), 1.0 / n_labels)
    votes = np.zeros((n_tasks, n_labels))
    for t, answer in zip(tasks, labels, strict=True):
        votes[t, answer] += 1
    for t in range(n_tasks):
        if votes[t].sum():
            posterior[t] = votes[t] / votes[t].sum()
    for t, g in gold.items():
        posterior[t] = np.eye(n_labels)[g]
    observed = [t for t in range(n_tasks) if votes[t].sum() or t in gold]
    for _ in range(iterations):
        counts = np.zeros((n_workers, n_labels, n_labels))
        for t, w, answer in zip(tasks, workers, labels, strict=True):
            counts[w, :, answer] += posterior[t]
        if one_coin is None:
            confusion = (counts + alpha) / (counts + alpha).sum(axis=2, keepdims=True)
        else:
            right, wrong = one_coin
            n = counts.sum(axis=(1, 2))
            accuracy = (np.trace(counts, axis1=1, axis2=2) + right) / (n + right + wrong)
            confusion = one_coin_confusion(accuracy, n_labels)
        prior = posterior[observed].sum(axis=0) + beta
        prior /= prior.sum()
        log_joint = np.tile(np.log(prior), (n_tasks, 1))
        for t, w, answer in zip(tasks, workers, labels, strict=True):
            log_joint[t] += np.log(confusion[w, :, answer])
        log_likelihood = 0.0
        for t in observed:
            if t in gold:
                log_likelihood += log_joint[t, gold[t]]
            else:
                log_likelihood += np.logaddexp.reduce(log_joint[t])
        posterior = np.exp(log_joint - np.logaddexp.reduce(log_joint, axis=1, keepdims=True))
        for t, g in gold.items():
            posterior[t] = np.eye(n_labels)[g]
    return posterior, confusion, prior, log_likelihood


@pytest.mark.parametrize("one_coin", [False, True])
def test_vectorised_em_equals_the_loop_reference(one_coin):
    rng = np.random.default_rng(11)
    n_tasks, n_workers, n_labels, n = 40, 7, 3, 150
    tasks = rng.integers(0, n_tasks - 3, n)  # the last three tasks get no judgments
    workers = rng.integers(0, n_workers, n)
    labels = rng.integers(0, n_labels, n)
    gold = {3: 2, 5: 0, n_tasks - 1: 1}  # the last one is gold without judgments
    alpha = confusion_prior(n_labels)
    expected = reference_em(
        tasks, workers, labels, n_tasks, n_workers, n_labels, alpha, 1.0, 6, gold,
        one_coin=(3.5, 1.5) if one_coin else None,
    )  # fmt: skip
    aggregate = one_coin_dawid_skene if one_coin else dawid_skene
    result = aggregate(
        tasks, workers, labels, n_tasks=n_tasks, n_workers=n_workers, n_labels=n_labels,
        gold_tasks=list(gold), gold_labels=list(gold.values()), max_iter=6, tol=0.0,
    )  # fmt: skip
    assert result.iterations == 6
    np.testing.assert_allclose(result.posterior, expected[0], atol=1e-9)
    np.testing.assert_allclose(result.confusion, expected[1], atol=1e-9)
    np.testing.assert_allclose(result.class_prior, expected[2], atol=1e-9)
    assert result.log_likelihood == pytest.approx(expected[3], abs=1e-8)
    # a task without judgments ends with the class prior as its posterior
    np.testing.assert_allclose(result.posterior[n_tasks - 2], result.class_prior)


def test_repeated_judgments_count_twice():
    once = dawid_skene([0, 0], [0, 1], [0, 1], n_tasks=1, n_workers=2, n_labels=2, max_iter=1)
    twice = dawid_skene(
        [0, 0, 0], [0, 0, 1], [0, 0, 1], n_tasks=1, n_workers=2, n_labels=2, max_iter=1
    )
    assert once.posterior[0, 0] == pytest.approx(0.5)
    assert twice.posterior[0, 0] > once.posterior[0, 0]


# --- workers ------------------------------------------------------------------------------


def test_constant_spammers_are_downweighted():
    rng = np.random.default_rng(5)
    n_tasks, honest, spammers = 300, 5, 3
    truth = rng.integers(0, 2, n_tasks)
    tasks, workers, labels = [], [], []
    for t in range(n_tasks):
        for w in range(honest):
            right = rng.random() < 0.75
            tasks.append(t), workers.append(w), labels.append(truth[t] if right else 1 - truth[t])
        for w in range(honest, honest + spammers):
            tasks.append(t), workers.append(w), labels.append(0)  # always "0"
    shape = {"n_tasks": n_tasks, "n_workers": honest + spammers, "n_labels": 2}
    vote = weighted_majority_vote(tasks, workers, labels, **shape)
    result = dawid_skene(tasks, workers, labels, **shape)
    mv_accuracy = (vote.labels == truth).mean()
    ds_accuracy = (result.labels == truth).mean()
    assert ds_accuracy > mv_accuracy + 0.1
    # how much a "0" from worker w moves the odds between the two labels
    log_odds = np.abs(np.log(result.confusion[:, 0, 0] / result.confusion[:, 1, 0]))
    assert (log_odds[:honest] > 0.8).all()
    assert (log_odds[honest:] < 0.05).all()
    # a spammer says nothing about truth-1 tasks: their "1" column stays at the prior
    assert (result.confusion[honest:, 1, 1] < 0.05).all()
    # (the one-coin model cannot say this: three workers who always agree look reliable)


def test_weighted_vote_downweights_too():
    # worker 0 (weight 3) against workers 1 and 2 (weight 1 each)
    vote = weighted_majority_vote(
        [0, 0, 0], [0, 1, 2], [2, 1, 1], n_tasks=1, n_workers=3, n_labels=3,
        worker_weights=[3.0, 1.0, 1.0],
    )  # fmt: skip
    assert vote.labels.tolist() == [2]
    np.testing.assert_allclose(vote.shares, [[0.0, 0.4, 0.6]])
    assert vote.confidence.tolist() == [pytest.approx(0.6)]
    plain = weighted_majority_vote([0, 0, 0], [0, 1, 2], [2, 1, 1], n_tasks=1, n_workers=3,
                                   n_labels=3)  # fmt: skip
    assert plain.labels.tolist() == [1]


def test_initial_accuracy_breaks_a_tie_towards_the_trusted_worker():
    # two workers disagree on the only task: a tie, which goes to the lowest label…
    args = ([0, 0], [0, 1], [1, 0])
    shape = {"n_tasks": 1, "n_workers": 2, "n_labels": 2}
    assert dawid_skene(*args, **shape).labels.tolist() == [0]
    # …unless worker 0 is known to be the better one
    trusted = dawid_skene(*args, **shape, initial_accuracy=[0.9, 0.6])
    assert trusted.labels.tolist() == [1]
    assert trusted.confidence[0] > 0.5
    # a prior for the first E-step alone can tip it too
    leaning = dawid_skene(*args, **shape, initial_accuracy=0.7, initial_prior=[0.2, 0.8])
    assert leaning.labels.tolist() == [1]


# --- a simulated crowd --------------------------------------------------------------------


def simulated_crowd(seed: int):
    """2,000 tasks, 5 classes, 50 workers: 40 honest of varied accuracy with class-dependent
    mistakes, 6 random clickers and 4 constant-answer spammers; 5 judgments per task."""
    rng = np.random.default_rng(seed)
    n_tasks, n_labels, n_workers, redundancy = 2_000, 5, 50, 5
    truth = rng.choice(n_labels, n_tasks, p=[0.4, 0.25, 0.15, 0.12, 0.08])
    confusion = np.empty((n_workers, n_labels, n_labels))
    for w in range(n_workers):
        accuracy = rng.uniform(0.45, 0.9)
        for k in range(n_labels):
            mistakes = rng.dirichlet(np.full(n_labels - 1, 0.5))
            confusion[w, k] = np.insert(mistakes * (1 - accuracy), k, accuracy)
    confusion[40:46] = 1 / n_labels
    confusion[46:] = 0.0
    confusion[46:, :, 0] = 1.0
    workers = np.stack([rng.choice(n_workers, redundancy, replace=False) for _ in truth])
    tasks = np.repeat(np.arange(n_tasks), redundancy)
    workers = workers.ravel()
    cumulative = confusion.cumsum(axis=2)[workers, truth[tasks]]
    labels = (rng.random(tasks.size)[:, None] > cumulative[:, :-1]).sum(axis=1)
    shape = {"n_tasks": n_tasks, "n_workers": n_workers, "n_labels": n_labels}
    return (tasks, workers, labels), shape, truth


def test_dawid_skene_beats_majority_vote_on_a_simulated_crowd():
    judgments, shape, truth = simulated_crowd(seed=3)
    vote = weighted_majority_vote(*judgments, **shape)
    result = dawid_skene(*judgments, **shape)
    one_coin = one_coin_dawid_skene(*judgments, **shape)
    mv, ds, oc = ((r.labels == truth).mean() for r in (vote, result, one_coin))
    assert ds > mv + 0.05, (mv, ds)
    assert oc > mv, (mv, oc)
    assert result.converged and result.iterations < 100
    # the likelihood ends higher than it started
    assert result.log_likelihood_history[-1] > result.log_likelihood_history[0]
    # stated confidence is roughly calibrated: confident labels are right more often
    confident = result.confidence > 0.95
    assert (result.labels[confident] == truth[confident]).mean() > 0.95
    # spammers (workers 40–49) get lower estimated accuracy than the honest median
    assert result.worker_accuracy[40:].max() < np.median(result.worker_accuracy[:40])


def test_results_are_deterministic_and_independent_of_judgment_order():
    judgments, shape, _ = simulated_crowd(seed=8)
    first = dawid_skene(*judgments, **shape)
    second = dawid_skene(*judgments, **shape)
    assert np.array_equal(first.posterior, second.posterior)
    assert np.array_equal(first.confusion, second.confusion)
    assert first.log_likelihood == second.log_likelihood
    order = np.random.default_rng(1).permutation(judgments[0].size)
    shuffled = dawid_skene(*(a[order] for a in judgments), **shape)
    np.testing.assert_allclose(shuffled.posterior, first.posterior, atol=1e-9)
    assert np.array_equal(shuffled.labels, first.labels)


# --- degenerate inputs --------------------------------------------------------------------


def test_no_judgments_gives_the_prior():
    result = dawid_skene([], [], [], n_tasks=3, n_workers=2, n_labels=4)
    np.testing.assert_allclose(result.posterior, 0.25)
    assert result.labels.tolist() == [0, 0, 0]
    np.testing.assert_allclose(result.confidence, 0.25)
    assert result.converged and result.log_likelihood == 0.0
    # a worker without judgments keeps the prior's matrix
    np.testing.assert_allclose(result.confusion[0], confusion_prior(4) / 5.0)
    vote = weighted_majority_vote([], [], [], n_tasks=2, n_workers=0, n_labels=3)
    assert vote.labels.tolist() == [-1, -1]
    assert vote.confidence.tolist() == [0.0, 0.0]


def test_nothing_at_all():
    result = dawid_skene([], [], [], n_tasks=0, n_workers=0, n_labels=2)
    assert result.posterior.shape == (0, 2)
    assert result.labels.shape == (0,)
    assert result.confusion.shape == (0, 2, 2)
    np.testing.assert_allclose(result.class_prior, 0.5)


def test_one_worker_is_believed():
    labels = [2, 0, 1, 1]
    result = dawid_skene([0, 1, 2, 3], [0] * 4, labels, n_tasks=4, n_workers=1, n_labels=3)
    assert result.labels.tolist() == labels
    one_coin = one_coin_dawid_skene([0, 1, 2, 3], [0] * 4, labels, n_tasks=4, n_workers=1,
                                    n_labels=3)  # fmt: skip
    assert one_coin.labels.tolist() == labels


def test_one_label_is_certain():
    for aggregate in (dawid_skene, one_coin_dawid_skene):
        result = aggregate([0, 1, 1], [0, 0, 1], [0, 0, 0], n_tasks=3, n_workers=2, n_labels=1)
        assert result.labels.tolist() == [0, 0, 0]
        assert result.confidence.tolist() == [1.0, 1.0, 1.0]
        assert result.log_likelihood == pytest.approx(0.0)


def test_zero_smoothing_stays_finite():
    # pure maximum likelihood: a perfect worker gets exact zeros in their matrix
    result = dawid_skene(
        HAND_TASKS, HAND_WORKERS, HAND_LABELS, **HAND_SHAPE, smoothing=0.0, prior_smoothing=0.0
    )
    assert np.isfinite(result.posterior).all()
    assert np.isfinite(result.log_likelihood)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task_index": [0, 1]}, "equal lengths"),
        ({"task_index": [0, 0, 9]}, "task_index must lie in"),
        ({"worker_index": [0, -1, 0]}, "worker_index must lie in"),
        ({"label_index": [0, 1, 2]}, "label_index must lie in"),
        ({"label_index": [0.0, 1.0, 1.0]}, "must hold integers"),
        ({"task_index": [[0, 0, 0]]}, "one-dimensional"),
        ({"n_labels": 0, "label_index": []}, "n_labels must be an integer of at least 1"),
        ({"n_tasks": -1}, "n_tasks must be"),
        ({"n_workers": 2.0}, "n_workers must be"),
        ({"gold_tasks": [0]}, "go together"),
        ({"gold_tasks": [0, 0], "gold_labels": [1, 1]}, "must not repeat"),
        ({"gold_tasks": [0], "gold_labels": [2]}, "gold_labels must lie in"),
        ({"gold_tasks": [5], "gold_labels": [0]}, "gold_tasks must lie in"),
        ({"initial_prior": [0.5, 0.5]}, "only used together with initial_accuracy"),
        ({"initial_accuracy": [0.5, 1.0]}, "strictly between 0 and 1"),
        ({"initial_accuracy": [0.5, 0.6, 0.7]}, "one number or 2"),
        ({"initial_accuracy": 0.7, "initial_prior": [1.0, 0.0]}, "initial_prior must be"),
        ({"smoothing": np.ones((3, 3))}, "n_labels × n_labels"),
        ({"smoothing": -1.0}, "non-negative"),
        ({"prior_smoothing": float("nan")}, "prior_smoothing"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1.0}, "tol"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(change, message):
    kwargs = {
        "task_index": [0, 0, 1],
        "worker_index": [0, 1, 0],
        "label_index": [0, 1, 1],
        "n_tasks": 2,
        "n_workers": 2,
        "n_labels": 2,
        **change,
    }
    with pytest.raises(ValueError, match=message):
        dawid_skene(**kwargs)


def test_bad_vote_weights_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        weighted_majority_vote([0], [0], [0], n_tasks=1, n_workers=1, n_labels=1,
                               worker_weights=[-1.0])  # fmt: skip
    with pytest.raises(ValueError, match="1 finite numbers"):
        weighted_majority_vote([0], [0], [0], n_tasks=1, n_workers=1, n_labels=1,
                               worker_weights=[1.0, 2.0])  # fmt: skip

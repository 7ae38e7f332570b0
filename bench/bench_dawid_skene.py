"""Batch Dawid–Skene on a million judgments: ours (jobs.aggregation) against Crowd-Kit's.

Simulates a seeded crowd — by default 200,000 tasks × 5 judgments = 1,000,000 judgments over
5 classes with skewed priors, 2,000 workers of very uneven activity: honest workers whose
accuracy runs from 0.45 to 0.95 with class-dependent confusions, random clickers and
constant-answer spammers — then times, on the same data:

  * majority vote, our one-coin EM and our Dawid–Skene (numpy + scipy only);
  * crowdkit.aggregation.DawidSkene, when Crowd-Kit is importable here, or else in the
    interpreter given by --crowdkit-python (default /tmp/crowdkit-venv/bin/python when it
    exists), which gets the judgments through a temporary .npz file.

and prints time, iterations and accuracy against the truth, and the time ratio. Crowd-Kit
lives in its own venv (bench/requirements-crowdkit.txt) to keep the app's lean:

    python3.11 -m venv /tmp/crowdkit-venv
    /tmp/crowdkit-venv/bin/pip install -r bench/requirements-crowdkit.txt
    .venv/bin/python bench/bench_dawid_skene.py
    .venv/bin/python bench/bench_dawid_skene.py --tasks 20000       # quick smoke run
    .venv/bin/python bench/bench_dawid_skene.py --no-crowdkit

It asserts nothing about speed and is never collected by the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.aggregation import dawid_skene, one_coin_dawid_skene, weighted_majority_vote

DEFAULT_CROWDKIT_PYTHON = "/tmp/crowdkit-venv/bin/python"
CLASS_PRIOR = (0.35, 0.25, 0.2, 0.12, 0.08)  # extended or trimmed to --labels
RANDOM_SPAMMERS = 0.08
CONSTANT_SPAMMERS = 0.04


@dataclass(frozen=True)
class Crowd:
    task: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    truth: np.ndarray
    kind: np.ndarray  # per worker: "honest", "random" or "constant"
    n_workers: int
    n_labels: int


def simulate(n_tasks: int, redundancy: int, n_workers: int, n_labels: int, seed: int) -> Crowd:
    """Judgments of a mixed crowd: `redundancy` distinct workers per task."""
    rng = np.random.default_rng(seed)
    prior = np.resize(np.asarray(CLASS_PRIOR), n_labels)
    prior = prior / prior.sum()
    truth = rng.choice(n_labels, size=n_tasks, p=prior)

    kind = np.full(n_workers, "honest", dtype=object)
    draw = rng.random(n_workers)
    kind[draw < RANDOM_SPAMMERS + CONSTANT_SPAMMERS] = "constant"
    kind[draw < RANDOM_SPAMMERS] = "random"
    confusion = np.empty((n_workers, n_labels, n_labels))
    accuracy = rng.uniform(0.45, 0.95, size=n_workers)
    # honest mistakes favour some labels over others (a Dirichlet spread per true label)
    mistakes = rng.dirichlet(np.full(n_labels - 1, 0.7), size=(n_workers, n_labels))
    for k in range(n_labels):
        others = [j for j in range(n_labels) if j != k]
        confusion[:, k, k] = accuracy
        confusion[:, k, others] = (1 - accuracy)[:, None] * mistakes[:, k]
    confusion[kind == "random"] = 1.0 / n_labels
    constant = np.flatnonzero(kind == "constant")
    confusion[constant] = 0.0
    confusion[constant, :, rng.integers(0, n_labels, size=constant.size)] = 1.0

    # uneven activity: a few workers do much of the work, many do a little
    activity = rng.lognormal(sigma=1.0, size=n_workers)
    workers = rng.choice(n_workers, size=(n_tasks, redundancy), p=activity / activity.sum())
    while True:  # redraw the rows where a worker was drawn twice for one task
        ordered = np.sort(workers, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if not repeated.any():
            break
        workers[repeated] = rng.choice(
            n_workers, size=(int(repeated.sum()), redundancy), p=activity / activity.sum()
        )
    task = np.repeat(np.arange(n_tasks), redundancy)
    worker = workers.ravel()
    cdf = confusion.cumsum(axis=2)[worker, truth[task]]
    label = (rng.random(task.size)[:, None] > cdf[:, :-1]).sum(axis=1)
    return Crowd(task, worker, label, truth, kind, n_workers, n_labels)


def timed(run):
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def run_crowdkit(task, worker, label, n_iter: int, tol: float) -> dict:
    """Crowd-Kit's DawidSkene on a (task, worker, label) DataFrame, in this interpreter."""
    import crowdkit
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    frame = pd.DataFrame({"task": task, "worker": worker, "label": label})
    model = DawidSkene(n_iter=n_iter, tol=tol)
    result, seconds = timed(lambda: model.fit_predict(frame))
    labels = result.reindex(np.arange(int(task.max()) + 1)).to_numpy()
    return {
        "version": crowdkit.__version__ if hasattr(crowdkit, "__version__") else "?",
        "seconds": seconds,
        "iterations": len(model.loss_history_),
        "labels": labels.astype(np.int64).tolist(),
    }


def crowdkit_importable() -> bool:
    try:
        import crowdkit.aggregation  # noqa: F401
    except ImportError:
        return False
    return True


def run_crowdkit_elsewhere(python: str, crowd: Crowd, n_iter: int, tol: float) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "judgments.npz"
        out = Path(scratch) / "crowdkit.json"
        np.savez(data, task=crowd.task, worker=crowd.worker, label=crowd.label)
        command = [python, __file__, "--crowdkit-worker", str(data), str(out)]
        command += ["--crowdkit-iter", str(n_iter), "--crowdkit-tol", str(tol)]
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


def crowdkit_worker(data: str, out: str, n_iter: int, tol: float) -> int:
    """Entry point inside the Crowd-Kit venv: read the judgments, fit, write the labels."""
    arrays = np.load(data)
    result = run_crowdkit(arrays["task"], arrays["worker"], arrays["label"], n_iter, tol)
    Path(out).write_text(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--redundancy", type=int, default=5, help="judgments per task")
    parser.add_argument("--workers", type=int, default=2_000)
    parser.add_argument("--labels", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--max-iter", type=int, default=100, help="EM iterations at most")
    parser.add_argument(
        "--tol", type=float, default=1e-6, help="ours: stop when log-likelihood/judgment moves less"
    )
    parser.add_argument(
        "--crowdkit-tol", type=float, default=1e-5, help="Crowd-Kit's tol (its default)"
    )
    parser.add_argument("--crowdkit-iter", type=int, default=None, help="default: --max-iter")
    parser.add_argument("--crowdkit-python", default=None, help="interpreter with crowd-kit")
    parser.add_argument("--no-crowdkit", action="store_true")
    parser.add_argument(
        "--crowdkit-worker", nargs=2, metavar=("NPZ", "JSON"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    crowdkit_iter = args.crowdkit_iter or args.max_iter
    if args.crowdkit_worker:
        return crowdkit_worker(*args.crowdkit_worker, crowdkit_iter, args.crowdkit_tol)
    if args.redundancy > args.workers or args.labels < 2 or args.tasks < 1:
        parser.error("need tasks ≥ 1, labels ≥ 2 and no more judgments per task than workers")

    print(
        f"simulating {args.tasks:,} tasks × {args.redundancy} judgments, {args.workers:,} "
        f"workers, {args.labels} classes (seed {args.seed})…",
        flush=True,
    )
    crowd, seconds = timed(
        lambda: simulate(args.tasks, args.redundancy, args.workers, args.labels, args.seed)
    )
    kinds = {k: int((crowd.kind == k).sum()) for k in ("honest", "random", "constant")}
    print(
        f"  {crowd.task.size:,} judgments in {seconds:.1f} s; workers: {kinds['honest']} honest, "
        f"{kinds['random']} random clickers, {kinds['constant']} constant-answer spammers"
    )
    shape = {"n_tasks": args.tasks, "n_workers": args.workers, "n_labels": args.labels}
    judgments = (crowd.task, crowd.worker, crowd.label)

    rows = []  # (method, seconds, iterations, accuracy)

    def report(method: str, labels: np.ndarray, seconds: float, iterations) -> None:
        accuracy = float((labels == crowd.truth).mean())
        rows.append((method, seconds, iterations, accuracy))
        print(f"  {method:<28} {seconds:8.2f} s  {str(iterations):>5} it  accuracy {accuracy:.4f}")

    print("ours (numpy + scipy):", flush=True)
    vote, seconds = timed(lambda: weighted_majority_vote(*judgments, **shape))
    report("majority vote", vote.labels, seconds, "-")
    fit, seconds = timed(
        lambda: one_coin_dawid_skene(*judgments, **shape, max_iter=args.max_iter, tol=args.tol)
    )
    report("one-coin EM", fit.labels, seconds, fit.iterations)
    ours, ours_seconds = timed(
        lambda: dawid_skene(*judgments, **shape, max_iter=args.max_iter, tol=args.tol)
    )
    report("Dawid–Skene", ours.labels, ours_seconds, ours.iterations)
    print(
        f"    {ours_seconds / ours.iterations * 1000:.0f} ms per iteration"
        f"{'' if ours.converged else ' (stopped at --max-iter)'}"
    )

    theirs = None
    if not args.no_crowdkit:
        python = args.crowdkit_python
        if python is None and not crowdkit_importable() and os.path.exists(DEFAULT_CROWDKIT_PYTHON):
            python = DEFAULT_CROWDKIT_PYTHON
        print(
            f"Crowd-Kit DawidSkene(n_iter={crowdkit_iter}, tol={args.crowdkit_tol})"
            f"{f' in {python}' if python else ''}…",
            flush=True,
        )
        if python:
            theirs = run_crowdkit_elsewhere(python, crowd, crowdkit_iter, args.crowdkit_tol)
        elif crowdkit_importable():
            theirs = run_crowdkit(*judgments, crowdkit_iter, args.crowdkit_tol)
        else:
            print("  crowd-kit is not importable here and no --crowdkit-python: skipped")
        if theirs is not None:
            labels = np.asarray(theirs["labels"])
            report(
                f"crowd-kit {theirs['version']}", labels, theirs["seconds"], theirs["iterations"]
            )
            agreement = float((labels == ours.labels).mean())
            print(f"    ours and Crowd-Kit's labels agree on {agreement:.2%} of tasks")

    print()
    print("summary")
    for method, seconds, iterations, accuracy in rows:
        print(f"  {method:<28} {accuracy:.4f} accurate  {seconds:8.2f} s  ({iterations} it)")
    if theirs is not None:
        ratio = theirs["seconds"] / ours_seconds
        difference = float((ours.labels == crowd.truth).mean()) - rows[-1][3]
        per_iteration = (theirs["seconds"] / theirs["iterations"]) / (
            ours_seconds / ours.iterations
        )
        print(
            f"  ours is {ratio:.1f}× faster than Crowd-Kit's DawidSkene ({per_iteration:.1f}× per "
            f"iteration), accuracy {difference:+.4f} (target: ≥ 10× and no worse)"
        )
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

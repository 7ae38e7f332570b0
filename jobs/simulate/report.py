"""The simulator's summary: label accuracy against the hidden truth, judgments per task,
fraudsters caught (precision, recall, after how many judgments) and where the money went."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from jobs.simulate.crowd import HONEST

CAUGHT_STATUSES = ("suspended", "banned", "offboarded")
FLAG_KEYS = ("flagged", "restricted", "fraud_flagged", "risk_flagged")


def _accuracy(answers: dict[str, Any], truth: dict[str, int], labels: list[str]) -> float | None:
    if not answers:
        return None
    right = sum(answers[key] == labels[truth[key]] for key in answers)
    return round(right / len(answers), 4)


def real_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if not line.get("is_gold")]


def label_accuracy(lines: list[dict[str, Any]], truth: dict[str, int], labels: list[str]):
    """Accuracy of the export's answers over completed real tasks."""
    answers = {
        line["external_id"]: line["answer"]
        for line in real_lines(lines)
        if line["status"] == "completed"
    }
    return _accuracy(answers, truth, labels)


def _majority(lines: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """Plain majority of each completed task's judgments (ties: the first label in order)."""
    out = {}
    for line in real_lines(lines):
        if line["status"] != "completed" or not line.get("detail"):
            continue
        votes = Counter(j["answer"] for j in line["detail"] if j["status"] != "voided")
        if votes:
            out[line["external_id"]] = max(
                labels, key=lambda label: (votes[label], -labels.index(label))
            )
    return out


def _status(sim, worker) -> str | None:
    reply = sim.worker_status(worker)
    return (
        reply.body.get("status") if reply.status == 200 and isinstance(reply.body, dict) else None
    )


def _caught(sim, worker) -> bool:
    if worker.caught_after is not None:
        return True
    reply = sim.worker_status(worker)
    if reply.status != 200 or not isinstance(reply.body, dict):
        return False
    body = reply.body
    if body.get("status") in CAUGHT_STATUSES:
        return True
    return any(bool(body.get(key)) for key in FLAG_KEYS)


def build_report(sim, main, lines, ds_run) -> dict[str, Any]:
    """The main job's figures, read right after it (comparison jobs are added later)."""
    labels, truth = main.labels, main.truth
    real = real_lines(lines)
    completed = [line for line in real if line["status"] == "completed"]
    final_accuracy = label_accuracy(lines, truth, labels)
    online = {line["external_id"]: line["answer"] for line in completed}
    ds_summary = None
    if ds_run and ds_run["status"] == "succeeded":
        by_task = {line["task_id"]: line["external_id"] for line in real}
        for change in ds_run.get("changes") or []:
            if change["task_id"] in by_task:
                online[by_task[change["task_id"]]] = change["previous_answer"]
        ds_summary = {
            "run_id": ds_run["id"],
            "labels_written": ds_run["labels_written"],
            "labels_changed": ds_run["labels_changed"],
            "iterations": ds_run["iterations"],
        }
    methods = Counter(line["method"] for line in completed)

    fraud_routes = sim.fraud_routes()
    caught = {w.index: _caught(sim, w) for w in sim.crowd}
    fraud = [w for w in sim.crowd if w.is_fraud]
    caught_fraud = [w for w in fraud if caught[w.index]]
    caught_all = [w for w in sim.crowd if caught[w.index]]
    detection_available = bool(fraud_routes) or bool(caught_all)
    by_kind: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"workers": 0, "judgments": 0, "caught": 0, "earned": 0}
    )
    earned = {w.index: sim.earnings(w) for w in sim.crowd}
    for w in sim.crowd:
        row = by_kind[w.kind]
        row["workers"] += 1
        row["judgments"] += main.per_worker.get(w.index, 0)
        row["caught"] += int(caught[w.index])
        row["earned"] += earned[w.index]
    after = [w.caught_after if w.caught_after is not None else w.judgments for w in caught_fraud]

    report: dict[str, Any] = {
        "seed": sim.options.seed,
        "options": {k: v for k, v in vars(sim.options).items() if k != "compare_fixed"}
        | {"compare_fixed": list(sim.options.compare_fixed)},
        "job_id": main.job_id,
        "job_completed": main.completed,
        "simulated_minutes": round(main.sim_seconds / 60, 1),
        "tasks": len(real),
        "tasks_completed": len(completed),
        "judgments": main.judgments,
        "judgments_per_task": round(
            sum(line["judgments"] for line in completed) / len(completed), 3
        )
        if completed
        else None,
        "accuracy": {
            "online": _accuracy(online, truth, labels),
            "final": final_accuracy,
            "after_dawid_skene": final_accuracy if ds_summary else None,
            # the same judgments counted by plain majority: the baseline a fixed job gives
            "majority": _accuracy(_majority(lines, labels), truth, labels),
        },
        "methods": dict(methods),
        "dawid_skene": ds_summary,
        "fraud": {
            "detection_routes": fraud_routes,
            "fraudsters": len(fraud),
            "caught": len(caught_all),
            "caught_fraudsters": len(caught_fraud),
            "precision": round(len(caught_fraud) / len(caught_all), 4)
            if caught_all
            else ("n/a" if not detection_available else None),
            "recall": round(len(caught_fraud) / len(fraud), 4)
            if fraud and detection_available
            else "n/a",
            "median_judgments_before_caught": statistics.median(after) if after else None,
            "caught_by_action": dict(Counter(w.caught_by for w in caught_all if w.caught_by)),
            "confirmed_by_reviewer": sum(w.confirmed for w in sim.crowd),
            "honest_caught": len(caught_all) - len(caught_fraud),
            "honest_suspended_or_banned": sum(
                1 for w in sim.crowd if not w.is_fraud and _status(sim, w) in CAUGHT_STATUSES
            ),
        },
        "money": {
            "currency": "USD",
            "honest": sum(earned[w.index] for w in sim.crowd if w.kind == HONEST),
            "fraudsters": sum(earned[w.index] for w in fraud),
        },
        "by_kind": dict(sorted(by_kind.items())),
        "fixed": [],
    }
    return report


def fixed_summary(run, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """A fixed-redundancy job: the export's labels (after the batch pass when one ran) and
    the plain majority of the judgments, against the truth."""
    completed = [line for line in real_lines(lines) if line["status"] == "completed"]
    return {
        "name": run.name,
        "job_id": run.job_id,
        "tasks_completed": len(completed),
        "judgments_per_task": round(
            sum(line["judgments"] for line in completed) / len(completed), 3
        )
        if completed
        else None,
        "methods": dict(Counter(line["method"] for line in completed)),
        "accuracy_export": label_accuracy(lines, run.truth, run.labels),
        "accuracy_majority": _accuracy(_majority(lines, run.labels), run.truth, run.labels),
    }


def _pct(value: Any) -> str:
    return f"{value * 100:.2f} %" if isinstance(value, float | int) else str(value)


def format_report(report: dict[str, Any]) -> str:
    acc, fraud, money = report["accuracy"], report["fraud"], report["money"]
    lines = [
        "=" * 72,
        f"Crowd simulation (seed {report['seed']}): job {report['job_id']}, "
        f"{report['tasks_completed']}/{report['tasks']} tasks completed "
        f"in {report['simulated_minutes']} simulated minutes",
        f"  judgments: {report['judgments']} ({report['judgments_per_task']} per completed task)",
        f"  label accuracy vs truth: online {_pct(acc['online'])}, "
        f"after Dawid–Skene {_pct(acc['after_dawid_skene'])}, "
        f"plain majority of the same judgments {_pct(acc['majority'])}",
        f"  label methods: {report['methods']}",
    ]
    if report["dawid_skene"]:
        ds = report["dawid_skene"]
        lines.append(
            f"  Dawid–Skene run {ds['run_id']}: {ds['labels_written']} labels rewritten, "
            f"{ds['labels_changed']} changed, {ds['iterations']} EM iterations"
        )
    lines += [
        f"  fraud detection routes: {', '.join(fraud['detection_routes']) or 'none found'}",
        f"  fraudsters caught: {fraud['caught_fraudsters']}/{fraud['fraudsters']}  "
        f"precision {_pct(fraud['precision'])}  recall {_pct(fraud['recall'])}  "
        f"median judgments before caught {fraud['median_judgments_before_caught']}",
        f"  caught by action {fraud['caught_by_action']}, confirmed by the reviewer "
        f"{fraud['confirmed_by_reviewer']}; honest workers caught {fraud['honest_caught']}, "
        f"suspended or banned {fraud['honest_suspended_or_banned']}",
        f"  earned (pending + available + paid, minor units {money['currency']}): "
        f"honest {money['honest']}, fraudsters {money['fraudsters']}",
        "  by kind:",
    ]
    for kind, row in report["by_kind"].items():
        lines.append(
            f"    {kind:18s} workers {row['workers']:4d}  judgments {row['judgments']:6d}  "
            f"caught {row['caught']:3d}  earned {row['earned']}"
        )
    for row in report["fixed"]:
        lines.append(
            f"  {row['name']}: {row['tasks_completed']} tasks, {row['judgments_per_task']} "
            f"judgments/task, accuracy: plain majority {_pct(row['accuracy_majority'])}, "
            f"exported labels {_pct(row['accuracy_export'])} ({row['methods']})"
        )
    lines.append("=" * 72)
    return "\n".join(lines)

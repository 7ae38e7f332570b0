"""The crowd simulator, in-process at small size: it completes the job through the public API
and its report agrees with what the API says."""

from __future__ import annotations

import json

import pytest

from jobs.simulate.cli import in_process_simulation
from jobs.simulate.crowd import HONEST
from jobs.simulate.driver import PRICE, Options
from jobs.simulate.report import format_report


def _quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def mixed_crowd():
    options = Options(workers=20, fraud_share=0.25, tasks=60, seed=7, gold_rate=0.1)
    lines: list[str] = []
    with in_process_simulation(options, lines.append) as (report, sim):
        export = sim.export(report["job_id"])
        runs = sim.client.get(f"/api/v1/jobs/{report['job_id']}/aggregations").ok(200).body
        yield report, sim, export, runs, lines


def test_every_task_is_completed_through_the_api(mixed_crowd):
    report, sim, export, _, lines = mixed_crowd
    assert report["job_completed"] is True
    assert report["tasks"] == report["tasks_completed"] == 60
    real = [line for line in export if not line["is_gold"]]
    assert len(real) == 60 and {line["status"] for line in real} == {"completed"}
    assert any("tasks completed 60/60" in line for line in lines)  # progress lines
    assert report["simulated_minutes"] > 0


def test_reported_accuracy_is_the_export_against_the_truth(mixed_crowd):
    report, sim, export, runs, _ = mixed_crowd
    truth = {line["external_id"]: sim.last_truth[line["external_id"]] for line in export}
    right = sum(line["answer"] == sim.labels[truth[line["external_id"]]] for line in export)
    assert report["accuracy"]["final"] == round(right / len(export), 4)
    # the batch pass ran when the job completed, and its labels are what the export shows
    assert [(r["trigger"], r["status"]) for r in runs["items"]] == [("job_completed", "succeeded")]
    assert report["accuracy"]["after_dawid_skene"] == report["accuracy"]["final"]
    assert {line["method"] for line in export} == {"dawid_skene"}
    assert report["dawid_skene"]["labels_written"] == 60
    # online labels: the export with each change undone
    changes = (
        sim.client.get(f"/api/v1/jobs/{report['job_id']}/aggregations/{runs['items'][0]['id']}")
        .ok(200)
        .body["changes"]
    )
    assert len(changes) == report["dawid_skene"]["labels_changed"]
    before = {line["task_id"]: line["answer"] for line in export}
    before.update({c["task_id"]: c["previous_answer"] for c in changes})
    by_id = {line["task_id"]: line["external_id"] for line in export}
    online_right = sum(answer == sim.labels[truth[by_id[t]]] for t, answer in before.items())
    assert report["accuracy"]["online"] == round(online_right / 60, 4)


def test_plain_majority_counts_the_judgments_that_stand(mixed_crowd):
    report, sim, _, _, _ = mixed_crowd
    export = sim.export(report["job_id"], detail=True)
    right = 0
    for line in export:
        votes = [j["answer"] for j in line["detail"] if j["status"] != "voided"]
        counts = {label: votes.count(label) for label in sim.labels}
        best = max(sim.labels, key=lambda label: (counts[label], -sim.labels.index(label)))
        right += best == sim.labels[sim.last_truth[line["external_id"]]]
    assert report["accuracy"]["majority"] == round(right / len(export), 4)


def test_report_numbers_are_consistent(mixed_crowd):
    report, sim, export, _, _ = mixed_crowd
    by_kind = report["by_kind"]
    assert sum(row["workers"] for row in by_kind.values()) == 20
    assert report["fraud"]["fraudsters"] == 5 == 20 - by_kind[HONEST]["workers"]
    assert sum(row["judgments"] for row in by_kind.values()) == report["judgments"]
    assert sum(w.judgments for w in sim.crowd) == report["judgments"]
    # judgments per task: real tasks only (gold judgments are the rest)
    real_judgments = sum(line["judgments"] for line in export)
    assert report["judgments_per_task"] == round(real_judgments / 60, 3)
    assert real_judgments <= report["judgments"]
    money = report["money"]
    assert money["honest"] == by_kind[HONEST]["earned"]
    assert money["fraudsters"] == sum(r["earned"] for k, r in by_kind.items() if k != HONEST)
    # every paid judgment earns at most its price; some are paid
    assert 0 < money["honest"] + money["fraudsters"] <= PRICE * report["judgments"]
    # no fraud engine on this branch: nobody is caught, and the report says detection is n/a
    if not report["fraud"]["detection_routes"] and not report["fraud"]["caught"]:
        assert report["fraud"]["precision"] == report["fraud"]["recall"] == "n/a"
    text = format_report(report)
    assert "60/60 tasks completed" in text and "after Dawid–Skene" in text


def test_an_honest_crowd_gets_accurate_labels_and_runs_are_deterministic():
    options = Options(
        workers=12,
        fraud_share=0.0,
        tasks=40,
        seed=1,
        gold_rate=0.1,
        redundancy_min=3,
        redundancy_max=5,
    )
    with in_process_simulation(options, _quiet) as (first, _):
        pass
    assert first["fraud"]["fraudsters"] == 0 and first["money"]["fraudsters"] == 0
    assert first["accuracy"]["after_dawid_skene"] >= 0.85
    assert first["accuracy"]["online"] >= 0.85
    with in_process_simulation(options, _quiet) as (second, _):
        pass
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def test_the_cli_runs_in_process_and_checks_its_options(app):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=[
            "crowd",
            "simulate",
            "--in-process",
            "--workers",
            "6",
            "--tasks",
            "8",
            "--fraud-share",
            "0",
            "--redundancy-min",
            "2",
            "--redundancy-max",
            "2",
            "--compare-fixed",
            "1",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tasks_completed"] == 8
    assert [row["name"] for row in report["fixed"]] == ["fixed-1"]
    assert report["fixed"][0]["tasks_completed"] == 8
    assert report["fixed"][0]["judgments_per_task"] == 1.0
    # one judgment a task: the majority is that judgment, and so is the exported label
    assert report["fixed"][0]["accuracy_majority"] == report["fixed"][0]["accuracy_export"]
    assert report["fixed"][0]["methods"] == {"posterior": 8}
    bad = runner.invoke(args=["crowd", "simulate", "--tasks", "8"])
    assert bad.exit_code == 2 and "exactly one of --base-url and --in-process" in bad.output
    bad = runner.invoke(args=["crowd", "simulate", "--in-process", "--compare-fixed", "x"])
    assert bad.exit_code == 2

"""The discrete-event loop: simulated workers lease and submit through the public API while
the sandbox clock jumps from one event to the next.

Events live in a priority queue ordered by simulated time (then by a sequence number, so
ties resolve the same way every run). Before each event the server's clock is moved to the
event's time; a lease is followed by a submit event one time-on-task later, a submit by the
worker's next lease after a short pause.
"""

from __future__ import annotations

import heapq
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.simulate.crowd import SimWorker, build_crowd
from jobs.simulate.http import Account, Reply, Transport, sign_up

PASSWORD = "simulated crowd password"
PRICE = 5  # minor units per judgment
EMPTY_BACKOFF = 30.0  # seconds before a worker who got nothing asks again
MAX_EMPTY = 8  # …and how many times in a row before giving up on the job
MAX_SIM_SECONDS = 14 * 86_400
IMPORT_CHUNK = 2000
# The fraud engine's periodic scan, run by the simulator on the simulated clock (in a real
# deployment an RQ job runs it on the wall clock), and what a reviewer then does.
SCAN_EVERY = 600.0
MAX_ROUNDS = 6
CAUGHT_ACTIONS = ("restrict", "suspend", "ban")


@dataclass
class Options:
    workers: int = 200
    fraud_share: float = 0.2
    tasks: int = 5000
    labels: int = 2
    gold_rate: float = 0.1
    seed: int = 1
    redundancy_min: int = 2
    redundancy_max: int = 5
    target_confidence: float = 0.9
    compare_fixed: tuple[int, ...] = ()
    # The admin's policy on the fraud queue (it sees only what the engine shows, never the
    # truth): "confirm" confirms every case the engine suspended (its judgments are voided
    # and their tasks re-opened), "none" leaves every case to nobody.
    reviewer: str = "confirm"


@dataclass
class JobRun:
    """One simulated job: its id, hidden truth and what happened."""

    name: str
    job_id: int
    truth: dict[str, int]  # external_id → label index
    labels: list[str]
    judgments: int = 0
    per_worker: dict[int, int] = field(default_factory=dict)  # crowd index → judgments
    sim_seconds: float = 0.0
    completed: bool = False


class Simulation:
    def __init__(
        self,
        transport: Transport,
        admin: Account,
        options: Options,
        progress: Callable[[str], None] = print,
    ):
        self.transport = transport
        self.admin = admin
        self.options = options
        self.rng = random.Random(options.seed)
        self.progress = progress
        self.labels = [f"label_{i}" for i in range(options.labels)]
        self.crowd: list[SimWorker] = []
        self.client: Account | None = None
        self.clock_seconds = 0.0  # simulated seconds since the start
        self.last_truth: dict[str, int] = {}  # the adaptive job's hidden truth
        self.run_tag = f"s{options.seed}-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:8]}"
        admin.on_rate_limited = self.advance

    # --- the sandbox clock ----------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self.admin.post("/api/v1/sandbox/clock", {"advance_seconds": seconds}).ok(200)
        self.clock_seconds += seconds

    def advance_to(self, instant: float) -> None:
        self.advance(instant - self.clock_seconds)

    # --- set-up ---------------------------------------------------------------------------

    def sign_up_crowd(self) -> None:
        options = self.options
        email = f"client-{self.run_tag}@sim.example"
        self.client = sign_up(
            self.transport, email, PASSWORD, "Client", "client", on_rate_limited=self.advance
        )
        self.crowd = build_crowd(options.workers, options.fraud_share, options.labels, self.rng)
        for worker in self.crowd:
            account = sign_up(
                self.transport,
                f"w{worker.index}-{self.run_tag}@sim.example",
                PASSWORD,
                f"Worker {worker.index}",
                "worker",
                remote_addr=worker.ip,
                fingerprint=worker.fingerprint,
                on_rate_limited=self.advance,
            )
            worker.account = account
            worker.worker_id = account.get("/api/v1/workers/me").ok(200).body["id"]
            for to in ("screening", "active"):
                self.admin.post(
                    f"/api/v1/workers/{worker.worker_id}/status",
                    {"to": to, "reason": "simulated crowd"},
                ).ok(200)
        self.progress(
            f"signed up {len(self.crowd)} workers "
            f"({sum(w.is_fraud for w in self.crowd)} fraudulent)"
        )

    def post_job(
        self, name: str, redundancy_min: int, redundancy_max: int, target_confidence: float
    ) -> JobRun:
        options = self.options
        gold_items = (
            max(10, round(options.tasks * options.gold_rate / 2)) if options.gold_rate else 0
        )
        body = {
            "title": f"Simulated {name}",
            "instructions": "Pick the right label.",
            "answer_spec": {"type": "single_choice", "labels": self.labels},
            "price_per_judgment": {"amount": PRICE, "currency": "USD"},
            "redundancy": {
                "min": redundancy_min,
                "max": redundancy_max,
                "target_confidence": target_confidence,
            },
            "gold_rate": options.gold_rate,
            "requirements": {},
            "lease_seconds": 600,
        }
        job = self.client.post("/api/v1/jobs", body).ok(201).body
        truth: dict[str, int] = {}
        rows = []
        for i in range(options.tasks):
            label = self.rng.randrange(options.labels)
            truth[f"t-{i}"] = label
            rows.append({"external_id": f"t-{i}", "payload": {"item": i}})
        for i in range(gold_items):
            label = self.rng.randrange(options.labels)
            truth[f"g-{i}"] = label
            rows.append(
                {
                    "external_id": f"g-{i}",
                    "payload": {"item": -1 - i},
                    "gold_answer": self.labels[label],
                }
            )
        for start in range(0, len(rows), IMPORT_CHUNK):
            text = "".join(json.dumps(r) + "\n" for r in rows[start : start + IMPORT_CHUNK])
            reply = self.client.call(
                "POST",
                f"/api/v1/jobs/{job['id']}/tasks",
                data=text.encode(),
                headers={"Content-Type": "application/x-ndjson"},
            ).ok(200)
            if reply.body.get("errors"):
                raise RuntimeError(f"task import failed: {reply.body['errors'][:3]}")
        # judgments the job may need at most, gold leases included, and a margin for fees
        budget = PRICE * 2 * (options.tasks * redundancy_max + options.workers * gold_items + 100)
        self.client.post(
            f"/api/v1/jobs/{job['id']}/fund",
            {"amount": {"amount": budget, "currency": "USD"}},
            headers={"Idempotency-Key": f"fund-{self.run_tag}-{job['id']}"},
        ).ok(201)
        self.client.post(f"/api/v1/jobs/{job['id']}/activate").ok(200)
        self.progress(
            f"job {job['id']} ({name}): {options.tasks} tasks + {gold_items} gold, "
            f"redundancy {redundancy_min}–{redundancy_max}"
        )
        return JobRun(name, job["id"], truth, self.labels)

    # --- the event loop -------------------------------------------------------------------

    def run_job(self, run: JobRun) -> JobRun:
        """Let the crowd work on one job until it completes (or no one can go on)."""
        events: list[tuple[float, int, str, int, Any]] = []
        sequence = 0

        def schedule(at: float, kind: str, worker: SimWorker, data: Any = None) -> None:
            nonlocal sequence
            sequence += 1
            heapq.heappush(events, (at, sequence, kind, worker.index, data))

        start = self.clock_seconds
        scanning = bool(self.fraud_routes())
        next_scan = start + SCAN_EVERY
        shared: dict[int, dict] = {}  # task id → answers of rings and shared devices
        submits = 0
        for _round in range(MAX_ROUNDS):
            # A round ends when the job does (or nobody can go on); a confirmed fraudster's
            # voided work re-opens tasks, and the crowd comes back for another round.
            if _round:
                if not scanning:
                    break
                self.fraud_review(run)
                if self._job_status(run) != "active":
                    break
            empty: dict[int, int] = {}
            events.clear()
            for worker in self.crowd:
                if not worker.stopped:
                    schedule(self.clock_seconds + self.rng.uniform(0, 120), "lease", worker)
            submits, next_scan = self._run_round(
                run, events, schedule, empty, shared, submits, start, scanning, next_scan
            )
        run.sim_seconds = self.clock_seconds - start
        run.completed = self._job_status(run) == "completed"
        self._report_progress(run)
        return run

    def _run_round(self, run, events, schedule, empty, shared, submits, start, scanning, next_scan):
        while events:
            at, _, kind, index, data = heapq.heappop(events)
            worker = self.crowd[index]
            if worker.stopped or at - start > MAX_SIM_SECONDS:
                continue
            if scanning and at >= next_scan:
                self.advance_to(next_scan)
                self.fraud_review(run)
                next_scan += SCAN_EVERY
            self.advance_to(at)
            account = worker.account
            if kind == "lease":
                reply = account.post("/api/v1/assignments", {"job_id": run.job_id})
                if reply.status == 201:
                    empty[index] = 0
                    task = reply.body["task"]
                    external = self._external_id(task)
                    answer = worker.answer(
                        run.truth[external],
                        len(self.labels),
                        self.rng,
                        shared.setdefault(task["id"], {}),
                    )
                    seconds = worker.time_on_task(self.rng)
                    schedule(
                        at + seconds,
                        "submit",
                        worker,
                        (reply.body["id"], self.labels[answer], seconds),
                    )
                elif reply.status == 204:
                    empty[index] = empty.get(index, 0) + 1
                    if self._job_status(run) != "active":
                        break
                    if empty[index] < MAX_EMPTY:
                        schedule(at + EMPTY_BACKOFF * empty[index], "lease", worker)
                elif reply.status == 403:
                    self._caught(worker)
                else:
                    reply.ok(201)
            else:
                assignment_id, answer, seconds = data
                active = round(seconds * self.rng.uniform(0.7, 0.95), 2)
                reply = account.post(
                    f"/api/v1/assignments/{assignment_id}/submit",
                    {"answer": answer, "active_seconds": active},
                )
                if reply.status == 200:
                    worker.judgments += 1
                    run.judgments += 1
                    run.per_worker[index] = run.per_worker.get(index, 0) + 1
                    submits += 1
                    if submits % 500 == 0:
                        self._report_progress(run)
                elif reply.status == 403:
                    self._caught(worker)
                    continue
                elif reply.status != 409:  # 409: the lease lapsed or the task was withdrawn
                    reply.ok(200)
                schedule(at + self.rng.expovariate(1 / 3.0), "lease", worker)
        return submits, next_scan

    def _external_id(self, task: dict[str, Any]) -> str:
        item = task["payload"]["item"]
        return f"t-{item}" if item >= 0 else f"g-{-1 - item}"

    def _job_status(self, run: JobRun) -> str:
        return self.client.get(f"/api/v1/jobs/{run.job_id}").ok(200).body["status"]

    def _caught(self, worker: SimWorker) -> None:
        worker.stopped = True
        if worker.caught_after is None:
            worker.caught_after = worker.judgments

    def _report_progress(self, run: JobRun) -> None:
        progress = self.client.get(f"/api/v1/jobs/{run.job_id}/progress").ok(200).body
        real = progress["tasks"]["real"]
        self.progress(
            f"  [{run.name}] t+{self.clock_seconds / 60:7.1f} min  judgments {run.judgments:6d}"
            f"  tasks completed {real['completed']}/{real['total']}"
        )

    # --- reading back ---------------------------------------------------------------------

    def export(self, job_id: int, detail: bool = False) -> list[dict[str, Any]]:
        path = f"/api/v1/jobs/{job_id}/results" + ("?detail=true" if detail else "")
        reply = self.client.get(path, headers={"Accept": "application/x-ndjson"}).ok(200)
        text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def aggregation(self, job_id: int) -> dict[str, Any] | None:
        """The job's first finished DS run (asking for one if none was queued)."""
        path = f"/api/v1/jobs/{job_id}/aggregations"
        runs = self.client.get(path).ok(200).body["items"]
        if not runs:
            reply = self.client.post(path)
            if reply.status != 202:
                return None
            runs = [reply.body]
        for _ in range(60):
            run = self.client.get(f"{path}/{runs[0]['id']}").ok(200).body
            if run["status"] in ("succeeded", "failed"):
                return run
            self._wait_a_little()
        return None

    def _wait_a_little(self) -> None:
        import time

        time.sleep(0.5)  # a real RQ worker is running the pass

    def fraud_review(self, run: JobRun) -> None:
        """The periodic scan, then the review queue: every worker the engine restricted,
        suspended or banned counts as caught (after the judgments they had made); under the
        "confirm" policy the admin confirms the suspended ones, voiding their work."""
        self.admin.post("/api/v1/fraud/scans", {"job_id": run.job_id}).ok(200)
        by_id = {w.worker_id: w for w in self.crowd}
        cursor = None
        while True:
            path = "/api/v1/fraud/cases?limit=100" + (f"&cursor={cursor}" if cursor else "")
            page = self.admin.get(path).ok(200).body
            for case in page["items"]:
                worker = by_id.get(case["worker"]["id"])
                if worker is None or case["action"] not in CAUGHT_ACTIONS:
                    continue
                if worker.caught_after is None:
                    worker.caught_after = worker.judgments
                    worker.caught_by = case["action"]
                if (
                    self.options.reviewer == "confirm"
                    and case["action"] == "suspend"
                    and case["status"] == "open"
                ):
                    self.admin.post(
                        f"/api/v1/fraud/cases/{case['id']}/decision",
                        {"action": "confirm", "note": "simulated reviewer: confirmed"},
                    ).ok(200)
                    worker.confirmed = True
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def worker_status(self, worker: SimWorker) -> Reply:
        return self.admin.get(f"/api/v1/workers/{worker.worker_id}")

    def fraud_routes(self) -> list[str]:
        reply = self.admin.get("/api/v1/openapi.json")
        if reply.status != 200 or not isinstance(reply.body, dict):
            return []
        return sorted(p for p in reply.body.get("paths", {}) if "fraud" in p or "risk" in p)

    def earnings(self, worker: SimWorker) -> int:
        reply = worker.account.get("/api/v1/workers/me/balance")
        if reply.status != 200:
            return 0
        body = reply.body
        return sum(
            body[k]["amount"]
            for k in ("pending", "available", "in_payout", "paid")
            if isinstance(body.get(k), dict)
        )

    def run_all(self) -> dict[str, Any]:
        """Sign up the crowd, run the adaptive job (and fixed-redundancy ones), report."""
        from jobs.simulate.report import build_report, fixed_summary

        options = self.options
        self.sign_up_crowd()
        main = self.post_job(
            "adaptive", options.redundancy_min, options.redundancy_max, options.target_confidence
        )
        self.last_truth = main.truth
        self.run_job(main)
        ds_run = self.aggregation(main.job_id)
        # read balances and statuses now, before the comparison jobs add to them
        report = build_report(self, main, self.export(main.job_id, detail=True), ds_run)
        for k in options.compare_fixed:
            run = self.run_job(self.post_job(f"fixed-{k}", k, k, 0.5))
            report["fixed"].append(fixed_summary(run, self.export(run.job_id, detail=True)))
        return report

"""The simulated crowd of the concurrency tests: workers that lease and judge through the
HTTP API (tests.jobs.test_concurrency), on threads of this process or of several.

A round runs every worker at once until each is told there is nothing to do. In one process
every request competes for one interpreter lock: a request that holds a row lock (a task's,
a job's money) waits for it between its statements, and the whole crowd queues behind that
wait. On PostgreSQL the crowd is therefore spread over a few processes (`CrowdProcesses`),
each with its own app, connection pool and threads, as separate labeling tools would be.
This module imports no test configuration: the processes it starts build their app from
the settings they are given.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Flask

from marketplace import clock


def address(index: int) -> str:
    # One address per worker, as in life (sign-ups are rate-limited per address).
    return f"10.0.{index // 250}.{index % 250 + 1}"


def client_for(app: Flask, index: int):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address(index)
    return client


def post(client, token: str, path: str, body: dict[str, Any], **headers: str):
    return client.post(path, json=body, headers={"Authorization": f"Bearer {token}", **headers})


def all_at_once(calls: list) -> list:
    """Run the calls on their own threads, released together; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(slot: int) -> None:
        barrier.wait()
        try:
            results[slot] = calls[slot]()
        except Exception:
            results[slot] = traceback.format_exc()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# --- one simulated worker ------------------------------------------------------------------


@dataclass
class Habits:
    """What a worker does besides leasing and answering."""

    release_rate: float = 0.0  # skip the task instead of answering
    abandon_first: int = 0  # walk away from this many of their first leases
    retry_rate: float = 0.0  # send the same submit again, as a tool retrying a timeout


def habits_of(index: int) -> Habits:
    """A mixed crowd: most just answer; some skip, some retry, a few walk away from leases."""
    habits = Habits()
    if index % 4 == 1:
        habits.release_rate = 0.15
    if index % 8 == 3:
        habits.abandon_first = 2
    if index % 8 in (5, 6):
        habits.retry_rate = 0.2
    return habits


@dataclass
class Tally:
    """Everything one worker saw in one round."""

    statuses: Counter = field(default_factory=Counter)
    unexpected: list[tuple[str, int, str]] = field(default_factory=list)
    submitted: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)
    retries: int = 0
    timed_out: bool = False
    crashed: str | None = None

    @property
    def leased(self) -> int:
        return self.statuses["lease 201"]


def work(
    app: Flask,
    index: int,
    token: str,
    job_id: int,
    first_round: bool,
    deadline: float,
) -> Tally:
    """Lease and judge until told there is nothing to do; record every answer."""
    tally = Tally()
    habits = habits_of(index)
    rng = random.Random(index)  # each worker's choices are the same on every run
    client = client_for(app, index)

    def call(name: str, path: str, body: dict[str, Any], expected: tuple[int, ...]):
        response = post(client, token, path, body)
        tally.statuses[f"{name} {response.status_code}"] += 1
        if response.status_code not in expected:
            tally.unexpected.append((name, response.status_code, response.get_data(as_text=True)))
        return response

    try:
        while time.monotonic() < deadline:
            leased = call("lease", "/api/v1/assignments", {"job_id": job_id}, (201, 204))
            if leased.status_code != 201:
                return tally
            assignment_id = leased.get_json()["id"]
            path = f"/api/v1/assignments/{assignment_id}"
            if first_round and len(tally.abandoned) < habits.abandon_first:
                tally.abandoned.append(assignment_id)  # the lease is left to expire
                continue
            if rng.random() < habits.release_rate:
                if (
                    call("release", f"{path}/release", {"reason": "skip"}, (200,)).status_code
                    == 200
                ):
                    tally.released.append(assignment_id)
                continue
            answer = rng.choice(["cat", "dog"])
            if call("submit", f"{path}/submit", {"answer": answer}, (200,)).status_code == 200:
                tally.submitted.append(assignment_id)
            if rng.random() < habits.retry_rate:
                tally.retries += 1
                again = call("retry", f"{path}/submit", {"answer": answer}, (200,))
                body = again.get_json() if again.status_code == 200 else {}
                if again.status_code == 200 and (body["id"], body["answer"]) != (
                    assignment_id,
                    answer,
                ):
                    tally.unexpected.append(("retry", 200, again.get_data(as_text=True)))
        tally.timed_out = True
    except Exception:  # the tally comes back whatever happens
        tally.crashed = traceback.format_exc()
    return tally


# --- the crowd spread over processes -------------------------------------------------------

_CHILD: dict[str, Any] = {}


def _start_process(settings: dict[str, Any]) -> None:
    """A crowd process: its own app (and pool), on a clock the rounds set."""
    from marketplace import create_app

    app = create_app(settings)
    app.config["JOBS_RAISE_INLINE"] = True
    frozen = clock.ManualClock()
    clock.install(app, frozen)
    _CHILD.update(app=app, clock=frozen)


def _round_in_process(
    now: datetime, job_id: int, group: list[tuple[int, str]], first: bool, deadline: float
) -> list[Tally]:
    app: Flask = _CHILD["app"]
    _CHILD["clock"].set(now)
    return all_at_once(
        [lambda i=i, t=t: work(app, i, t, job_id, first, deadline) for i, t in group]
    )


class CrowdProcesses:
    """`count` processes that each run a share of the workers on threads, round by round.

    `settings` are the app's (create_app), its database and engine options included; the
    processes are started fresh (spawn), never forked from this threaded one."""

    def __init__(self, count: int, settings: dict[str, Any]):
        self.count = count
        self.pool = ProcessPoolExecutor(
            max_workers=count,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_process,
            initargs=(settings,),
        )

    def round(
        self, now: datetime, job_id: int, tokens: list[str], first: bool, deadline: float
    ) -> list[Tally]:
        """Every worker once, spread over the processes; their tallies in worker order."""
        indexed = list(enumerate(tokens))
        groups = [indexed[n :: self.count] for n in range(self.count)]
        futures = [
            self.pool.submit(_round_in_process, now, job_id, group, first, deadline)
            for group in groups
        ]
        tallies: list[Tally] = [Tally() for _ in tokens]
        for group, future in zip(groups, futures, strict=True):
            for (index, _), tally in zip(group, future.result(), strict=True):
                tallies[index] = tally
        return tallies

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

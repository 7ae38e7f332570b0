"""The task API's lease + submit round trip through HTTP, against a bare baseline.

Serves Crowdline (wsgi:app) and the bare Flask + Flask-SQLAlchemy app of bench/bare_app.py
with gunicorn (4 workers x 8 threads by default) on loopback ports, one at a time, and
drives each with 32 concurrent clients, each acting for its own active worker: lease a task
of one job, submit an answer, again, for a fixed time after a warm-up. Redundancy is 1, so
tasks drain; a run also stops once half of the job is leased, so the job keeps its size.

  (a) round trips per second, p50/p99 of lease and of submit, Crowdline against the bare app
      (target: Crowdline >= 40 % of the bare app's round trips per second);
  (b) the same with 10,000 and with 1,000,000 tasks in the job
      (target: Crowdline's lease p99 at 1,000,000 <= 1.3 x its p99 at 10,000);

each followed by one client alone on the same server (a lease's own latency, no queueing),
and with what the server's database sessions were doing meanwhile (running, waiting for the
app, waiting for a lock, on which statement). Then it EXPLAINs every statement of one lease
and one submit at the largest size, flags sequential scans of big tables, and EXPLAIN
ANALYZEs the lease query (custom and generic plan); --profile N runs N round trips
in-process under cProfile and breaks a round trip's time down.

Crowdline's database (DATABASE_URL, default postgresql://postgres@127.0.0.1/
crowdline_bench_lease, created when missing) is rebuilt from the migrations; the bare app
uses a database of its own next to it (<name>_bare). Accounts, the job and its funding go
through the API in-process; tasks are loaded with COPY. Only loopback traffic; every wait is
bounded. It asserts nothing about speed and is never collected by the test suite.

    .venv/bin/python bench/bench_leasing.py                 # the figures for the issue
    .venv/bin/python bench/bench_leasing.py --quick         # a small smoke run
    .venv/bin/python bench/bench_leasing.py --profile 300   # + where Crowdline's time goes
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import io
import json
import logging
import os
import pstats
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bare_app  # noqa: E402  (bench/ is on sys.path when this file runs)
import psycopg  # noqa: E402
from psycopg import conninfo, sql  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1/crowdline_bench_lease"
SECRET_KEY = "bench-leasing"
PASSWORD = "correct horse battery staple"
PRICE = 5
MIN_MEASURED = 50  # round trips a run needs before its rate and percentiles mean anything
BIG_TABLES = ("tasks", "assignments", "ledger_entries", "ledger_transactions", "holds")


# ---------------------------------------------------------------------------- databases


def plain_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def with_database(url: str, name: str) -> str:
    info = conninfo.conninfo_to_dict(plain_url(url))
    return conninfo.make_conninfo(**{**info, "dbname": name})


def as_url(url_or_dsn: str) -> str:
    """A postgresql:// URL for a libpq URL or key=value string (gunicorn's env wants a URL)."""
    if url_or_dsn.startswith("postgres"):
        return url_or_dsn
    info = conninfo.conninfo_to_dict(url_or_dsn)
    host, port = info.get("host", "127.0.0.1"), info.get("port", "5432")
    user = info.get("user", "postgres")
    password = f":{info['password']}" if info.get("password") else ""
    return f"postgresql://{user}{password}@{host}:{port}/{info['dbname']}"


def ensure_database(url: str) -> None:
    info = conninfo.conninfo_to_dict(plain_url(url))
    name = info["dbname"]
    with psycopg.connect(**{**info, "dbname": "postgres"}, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"created database {name}")


def copy_text(conn: psycopg.Connection, statement: str, lines: Iterator[str]) -> None:
    """COPY text-format rows, written in chunks (much faster than row by row)."""
    with conn.cursor() as cur, cur.copy(statement) as copy:
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) == 20_000:
                copy.write("".join(chunk))
                chunk.clear()
        if chunk:
            copy.write("".join(chunk))


def payload(i: int) -> str:
    return json.dumps({"image_url": f"https://example.org/images/{i}.jpg"})


# ---------------------------------------------------------------------------- Crowdline


@dataclass
class Crowd:
    client_token: str
    worker_tokens: list[str]
    jobs: dict[int, int] = field(default_factory=dict)  # size -> job id


def build_crowdline(url: str):
    os.environ["DATABASE_URL"] = as_url(url)
    os.environ["SECRET_KEY"] = SECRET_KEY  # tokens are checked by the gunicorn workers too
    os.environ.pop("REDIS_URL", None)
    from marketplace import create_app

    app = create_app({"redis_url": None, "jobs_inline": True})
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return app


def reset_crowdline(app) -> None:
    from flask_migrate import upgrade
    from sqlalchemy import text

    from marketplace.database import db

    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        logging.disable(logging.INFO)
        try:
            upgrade()
        finally:
            logging.disable(logging.NOTSET)
        db.engine.dispose()


class InProcess:
    """Calls the API through the test client, one address per caller (sign-ups are
    rate-limited per address)."""

    def __init__(self, app):
        self.app = app

    def call(self, method, path, token=None, address="10.9.0.1", **kw):
        client = self.app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = client.open(path, method=method, headers=headers, **kw)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.get_data()}")
        return response.get_json()

    def signup(self, kind: str, n: int) -> str:
        email = f"{kind}{n}@bench.example"
        body = {"email": email, "password": PASSWORD, "name": f"{kind} {n}", "account_type": kind}
        if kind != "worker":
            body["organization"] = f"{kind} org {n}"
        address = f"10.{8 + n // 60000}.{n // 250 % 240}.{n % 250 + 1}"
        self.call("POST", "/api/v1/auth/signup", json=body, address=address)
        login = {"email": email, "password": PASSWORD}
        return self.call("POST", "/api/v1/auth/login", json=login)["access_token"]


def make_crowd(app, workers: int) -> Crowd:
    from marketplace.accounts import services

    api = InProcess(app)
    with app.app_context():
        services.ensure_platform_admin("admin@bench.example", PASSWORD)
    admin = api.call(
        "POST", "/api/v1/auth/login", json={"email": "admin@bench.example", "password": PASSWORD}
    )["access_token"]
    client = api.signup("client", 0)
    tokens = []
    for n in range(1, workers + 1):
        token = api.signup("worker", n)
        worker_id = api.call("GET", "/api/v1/workers/me", token)["id"]
        for to in ("screening", "active"):
            api.call(
                "POST",
                f"/api/v1/workers/{worker_id}/status",
                admin,
                json={"to": to, "reason": "bench"},
            )
        tokens.append(token)
    return Crowd(client, tokens)


def add_job(app, url: str, crowd: Crowd, size: int) -> int:
    """A funded, active job of `size` tasks with redundancy 1; tasks loaded with COPY."""
    api = InProcess(app)
    job = api.call(
        "POST",
        "/api/v1/jobs",
        crowd.client_token,
        json={
            "title": f"Cats and dogs, {size:,} images",
            "instructions": "Pick the animal.",
            "answer_spec": {"type": "single_choice", "labels": ["cat", "dog"]},
            "price_per_judgment": {"amount": PRICE, "currency": "USD"},
            "redundancy": {"min": 1, "max": 1, "target_confidence": 0.9},
            "gold_rate": 0.0,
            "requirements": {},
            "lease_seconds": 3600,
        },
    )
    started = time.perf_counter()
    with psycopg.connect(plain_url(url)) as conn:
        now = "2026-01-01 00:00:00+00"
        copy_text(
            conn,
            "COPY tasks (job_id, payload, is_gold, priority, status, redundancy_target,"
            " live_count, submitted_count, created_at) FROM STDIN",
            (f"{job['id']}\t{payload(i)}\tf\t0\topen\t1\t0\t0\t{now}\n" for i in range(size)),
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE tasks")
    took = time.perf_counter() - started
    print(f"  Crowdline: job {job['id']}: {size:,} tasks by COPY in {took:.1f} s")
    api.call(
        "POST",
        f"/api/v1/jobs/{job['id']}/fund",
        crowd.client_token,
        json={"amount": {"amount": 10**10, "currency": "USD"}},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    api.call("POST", f"/api/v1/jobs/{job['id']}/activate", crowd.client_token)
    return job["id"]


def load_bare(url: str, size: int) -> int:
    started = time.perf_counter()
    bare_app.create_schema(as_url(url))
    with psycopg.connect(plain_url(url)) as conn:
        copy_text(
            conn,
            "COPY tasks (job_id, redundancy_target, payload) FROM STDIN",
            (f"1\t1\t{payload(i)}\n" for i in range(size)),
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE tasks")
    print(f"  bare app: {size:,} tasks by COPY in {time.perf_counter() - started:.1f} s")
    return 1


# ---------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gunicorn(label: str, spec: str, chdir: Path, url: str, args, logs: Path) -> Iterator[int]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": as_url(url),
        "SECRET_KEY": SECRET_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REDIS_URL", None)
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "--workers", str(args.workers),
        "--worker-class", "gthread",
        "--threads", str(args.threads),
        # Each worker its own listening socket, so the kernel spreads the clients' kept-alive
        # connections over the workers; on one shared socket, whichever worker is awake
        # accepts most of them and the others idle.
        "--reuse-port",
        "--bind", f"127.0.0.1:{port}",
        "--chdir", str(chdir),
        "--timeout", "120",
        "--graceful-timeout", "5",
        "--log-level", "warning",
        spec,
    ]  # fmt: skip
    log_path = logs / f"{label}.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180  # many workers boot slowly on two cores
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"{label} exited: {log_path.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label} did not answer within 180 s")
            time.sleep(0.2)
        yield port
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


# ---------------------------------------------------------------------------- load


@dataclass
class Routes:
    lease: str
    submit: str  # with {id}
    auth: list[str]  # one Authorization header value per client


@dataclass
class Run:
    label: str
    size: int
    round_trips: int = 0
    seconds: float = 0.0
    lease_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    empty: int = 0
    errors: Counter = field(default_factory=Counter)
    client_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.round_trips / self.seconds if self.seconds else 0.0

    def pct(self, which: str, q: int) -> float:
        values = getattr(self, f"{which}_ms")
        if len(values) < 2:
            return float("nan")
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def post(conn: http.client.HTTPConnection, path: str, body: dict, auth: str):
    data = json.dumps(body).encode()
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    conn.request("POST", path, body=data, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def drive(
    label: str,
    size: int,
    port: int,
    routes: Routes,
    job_id: int,
    clients: int,
    warmup: float,
    duration: float,
) -> Run:
    """Every client leases and submits in a loop: warm-up, then `duration` seconds measured
    (or until half of the job has been leased)."""
    run = Run(label, size)
    lock = threading.Lock()
    leased = [0]
    cap = size // 2
    t0 = time.perf_counter()
    measure_from = t0 + warmup
    stop_at = measure_from + duration
    finished: list[float] = []

    def client(auth: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine_lease, mine_submit, errors, empty = [], [], Counter(), 0
        try:
            while True:
                start = time.perf_counter()
                if start >= stop_at or leased[0] >= cap:
                    break
                try:
                    status, body = post(conn, routes.lease, {"job_id": job_id}, auth)
                    leased_at = time.perf_counter()
                    if status == 204:
                        empty += 1
                        continue
                    if status != 201:
                        errors[f"lease {status}"] += 1
                        continue
                    with lock:
                        leased[0] += 1
                    assignment = json.loads(body)["id"]
                    status, _ = post(
                        conn, routes.submit.format(id=assignment), {"answer": "cat"}, auth
                    )
                    done = time.perf_counter()
                except (OSError, http.client.HTTPException) as error:
                    errors[type(error).__name__] += 1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    continue
                if status != 200:
                    errors[f"submit {status}"] += 1
                    continue
                if start >= measure_from:
                    mine_lease.append((leased_at - start) * 1000)
                    mine_submit.append((done - leased_at) * 1000)
        finally:
            conn.close()
            with lock:
                run.lease_ms.extend(mine_lease)
                run.submit_ms.extend(mine_submit)
                run.errors.update(errors)
                run.empty += empty
                finished.append(time.perf_counter())

    cpu = time.process_time()
    threads = [
        threading.Thread(target=client, args=(a,), daemon=True) for a in routes.auth[:clients]
    ]
    for thread in threads:
        thread.start()
    next_report = t0 + 5
    while any(t.is_alive() for t in threads):
        time.sleep(0.25)
        now = time.perf_counter()
        if now >= next_report:
            phase = "warm-up" if now < measure_from else "measuring"
            print(
                f"    {label:<10} {now - t0:5.1f} s  {leased[0]:>7,} leased  ({phase})", flush=True
            )
            next_report += 5
        if now > stop_at + 120:
            raise RuntimeError(f"{label}: clients still busy 120 s after the end")
    run.client_cpu = time.process_time() - cpu
    run.round_trips = len(run.lease_ms)
    run.seconds = max(0.001, min(max(finished), stop_at) - measure_from)
    return run


class WaitSampler:
    """Samples what the server's database sessions are doing, twice a second: running, idle
    (waiting for the app, i.e. Python), or waiting for a lock, and on which statement."""

    def __init__(self, url: str):
        self.url = plain_url(url)
        self.states: Counter = Counter()
        self.lock_waits: Counter = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.5):
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event, left(query, 60)"
                    " FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend'"
                ).fetchall()
                self.samples += 1
                for state, wait_type, _wait, query in rows:
                    if wait_type == "Lock":
                        self.states["waiting for a lock"] += 1
                        self.lock_waits[" ".join(query.split())[:60]] += 1
                    elif state == "active":
                        self.states["running a statement"] += 1
                    elif state == "idle in transaction":
                        self.states["in a transaction, waiting for the app"] += 1
                    else:
                        self.states["idle (between requests)"] += 1

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def report(self) -> list[str]:
        n = max(1, self.samples)
        lines = ["    database sessions, on average: " + ", ".join(
            f"{count / n:.1f} {state}" for state, count in self.states.most_common()
        )]  # fmt: skip
        for query, count in self.lock_waits.most_common(3):
            lines.append(f"      {count / n:4.1f} waiting on: {query}")
        return lines


def measure(label, size, spec, chdir, url, routes, job_id, args, logs) -> tuple[Run, Run]:
    """The crowd's run, then one client alone on the same server: the lease's own cost."""
    with gunicorn(f"{label}-{size}", spec, chdir, url, args, logs) as port:
        with WaitSampler(url) as sampler:
            run = drive(label, size, port, routes, job_id, args.clients, args.warmup, args.duration)
        solo = drive(f"{label} solo", size, port, routes, job_id, 1, 1.0, args.solo)
    print(
        f"  {label:<10} {size:>9,} tasks: {run.rate:7.1f} round trips/s   lease p50 "
        f"{run.pct('lease', 50):6.1f} p99 {run.pct('lease', 99):7.1f} ms   submit p50 "
        f"{run.pct('submit', 50):6.1f} p99 {run.pct('submit', 99):7.1f} ms"
        + (f"   errors {dict(run.errors)}" if run.errors else "")
    )
    for line in sampler.report():
        print(line)
    print(
        f"    one client alone: {solo.rate:6.1f} round trips/s   lease p50"
        f" {solo.pct('lease', 50):.1f} p99 {solo.pct('lease', 99):.1f} ms   submit p50"
        f" {solo.pct('submit', 50):.1f}"
        f" p99 {solo.pct('submit', 99):.1f} ms"
    )
    return run, solo


# ---------------------------------------------------------------------------- EXPLAIN


def capture_statements(app, method: str, path: str, token: str, body: dict):
    """The statements one request runs, each with the project function that issued it."""
    from sqlalchemy import event

    from marketplace.database import db

    captured: list[tuple[str, dict, str]] = []

    def origin() -> str:
        for frame in reversed(traceback.extract_stack()[:-2]):
            name = frame.filename
            if str(ROOT) in name and "/.venv/" not in name and "/bench/" not in name:
                return f"{Path(name).relative_to(ROOT)}:{frame.name}"
        return "?"

    def grab(_conn, _cursor, statement, parameters, _context, many):
        if many:  # an executemany (a batch of rows): its first row's values stand for all
            parameters = parameters[0]
        captured.append((statement, parameters, origin()))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", grab)
    try:
        client = app.test_client()
        response = client.open(
            path, method=method, json=body, headers={"Authorization": f"Bearer {token}"}
        )
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    return response, captured


def _positional(statement: str, parameters: dict) -> tuple[str, list]:
    names: list[str] = []

    def swap(match: re.Match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", swap, statement), [parameters[n] for n in names]


def explain(app, url: str, crowd: Crowd, job_id: int) -> list[str]:
    """EXPLAIN every statement of one lease and one submit; ANALYZE the lease query."""
    out: list[str] = []
    token = crowd.worker_tokens[0]
    lease, lease_sql = capture_statements(
        app, "POST", "/api/v1/assignments", token, {"job_id": job_id}
    )
    if lease.status_code != 201:
        return [f"lease answered {lease.status_code}; nothing to explain"]
    assignment = lease.get_json()["id"]
    submit, submit_sql = capture_statements(
        app, "POST", f"/api/v1/assignments/{assignment}/submit", token, {"answer": "cat"}
    )
    flagged: list[str] = []
    with psycopg.connect(plain_url(url)) as conn:
        conn.execute("SET plan_cache_mode = force_custom_plan")
        for name, statements in (("lease", lease_sql), ("submit", submit_sql)):
            by_origin = Counter(o.split(":")[0] for _s, _p, o in statements)
            out.append(
                f"{name}: {len(statements)} statements; by module: "
                + ", ".join(f"{m} {n}" for m, n in by_origin.most_common())
            )
            for statement, parameters, where in statements:
                head = statement.lstrip().split(None, 1)[0].upper()
                if head not in ("SELECT", "UPDATE", "INSERT", "DELETE"):
                    continue
                with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
                    cur.execute("EXPLAIN " + statement, parameters)
                    plan = "\n".join(r[0] for r in cur.fetchall())
                scans = re.findall(r"Seq Scan on (\w+)", plan)
                if any(t in BIG_TABLES for t in scans):
                    flagged.append(f"  {name}, {where}: Seq Scan on {', '.join(scans)}:")
                    flagged.append("      " + " ".join(statement.split())[:200])
        out.append(f"sequential scans on big tables: {len(flagged) or 'none'}")
        out.extend(flagged)
        conn.rollback()

        claim = next((s, p) for s, p, _ in lease_sql if "FROM tasks" in s and "SKIP LOCKED" in s)
        for mode in ("force_custom_plan", "force_generic_plan"):
            conn.execute(f"SET plan_cache_mode = {mode}")
            text_, values = _positional(*claim)
            conn.execute("DEALLOCATE ALL")
            conn.execute(f"PREPARE claim AS {text_}")
            cur = psycopg.ClientCursor(conn)
            cur.execute(
                "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, SUMMARY ON) EXECUTE claim ("
                + ", ".join(["%s"] * len(values))
                + ")",
                values,
            )
            out.append(f"lease query, {mode.split('_')[1]} plan:")
            out.extend("    " + r[0] for r in cur.fetchall())
            conn.rollback()
    return out


# ---------------------------------------------------------------------------- profile


def profile(app, crowd: Crowd, job_id: int, count: int) -> list[str]:
    """Lease + submit `count` times in-process under cProfile: where a round trip's time goes."""
    client = app.test_client()
    headers = {"Authorization": f"Bearer {crowd.worker_tokens[-1]}"}
    profiler = cProfile.Profile()
    wall = time.perf_counter()
    profiler.enable()
    for _ in range(count):
        lease = client.post("/api/v1/assignments", json={"job_id": job_id}, headers=headers)
        if lease.status_code != 201:
            break
        client.post(
            f"/api/v1/assignments/{lease.get_json()['id']}/submit",
            json={"answer": "cat"},
            headers=headers,
        )
    profiler.disable()
    wall = time.perf_counter() - wall
    stats = pstats.Stats(profiler)
    total = sum(row[3] for key, row in stats.stats.items() if key[2] == "wsgi_app")  # type: ignore[attr-defined]

    def cumulative(file_part: str, function: str) -> float:
        return sum(
            row[3]
            for (file, _line, name), row in stats.stats.items()  # type: ignore[attr-defined]
            if name == function and file.endswith(file_part)
        )

    parts = [
        ("authenticate the token", "marketplace/auth.py", "authenticate"),
        ("load the worker profile", "workers/access.py", "my_worker_profile"),
        ("lease_next_task (all of it)", "jobs/leasing.py", "lease_next_task"),
        ("  place_hold (billing)", "jobs/money.py", "place_hold"),
        ("  can_afford_a_judgment", "jobs/money.py", "can_afford_a_judgment"),
        ("  expire_due_leases", "jobs/leasing.py", "expire_due_leases"),
        ("submit (all of it)", "jobs/leasing.py", "submit"),
        ("  settle_judgment (billing)", "jobs/money.py", "settle_judgment"),
        ("  get_for_update (row locks)", "marketplace/locking.py", "get_for_update"),
        ("response: reload assignment, task, job", "jobs/routes.py", "__init__"),
        ("waiting on PostgreSQL (psycopg)", "psycopg/connection.py", "wait"),
    ]
    lines = [f"{count} round trips in-process in {wall:.1f} s (under the profiler)"]
    for label, file_part, function in parts:
        spent = cumulative(file_part, function)
        lines.append(f"  {label:<42} {spent / count * 1000:7.2f} ms  {spent / total:6.1%}")
    lines.append(f"  {'whole request handling (wsgi_app)':<42} {total / count * 1000:7.2f} ms")
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(12)
    lines.append("top functions by own time:")
    lines.extend(
        "    " + line for line in buffer.getvalue().splitlines() if re.match(r"\s+\d", line)
    )
    return lines


# ---------------------------------------------------------------------------- main


def summary(runs: dict[tuple[str, int], Run], solos, sizes: list[int]) -> list[str]:
    lines = [
        "",
        f"{'server':<10} {'tasks':>10} {'rt/s':>8} {'lease p50':>10} {'lease p99':>10}"
        f" {'submit p50':>11} {'submit p99':>11} {'round trips':>12} {'seconds':>8}"
        f" {'errors':>7}",
    ]
    for size in sizes:
        for label in ("Crowdline", "bare"):
            run = runs[(label, size)]
            lines.append(
                f"{label:<10} {size:>10,} {run.rate:>8.1f} {run.pct('lease', 50):>10.1f}"
                f" {run.pct('lease', 99):>10.1f} {run.pct('submit', 50):>11.1f}"
                f" {run.pct('submit', 99):>11.1f} {run.round_trips:>12,}"
                f" {run.seconds:>8.1f} {sum(run.errors.values()):>7}"
            )
    lines.append("")
    for size in sizes:
        unmeasured = [
            label
            for label in ("Crowdline", "bare")
            if runs[(label, size)].round_trips < MIN_MEASURED
        ]
        if unmeasured:
            lines.append(
                f"(a) at {size:,} tasks: not measured ({' and '.join(unmeasured)} leased half of"
                f" the job before measuring began or measured under {MIN_MEASURED} round trips;"
                " a bigger job or a shorter warm-up measures it)"
            )
            continue
        ratio = runs[("Crowdline", size)].rate / runs[("bare", size)].rate
        verdict = "met" if ratio >= 0.40 else "MISSED"
        lines.append(
            f"(a) Crowdline / bare round trips per second at {size:,} tasks: {ratio:6.1%}"
            f"   (target >= 40 %: {verdict})"
        )
    small, large = sizes[0], sizes[-1]
    growth = runs[("Crowdline", large)].pct("lease", 99) / runs[("Crowdline", small)].pct(
        "lease", 99
    )
    bare_growth = runs[("bare", large)].pct("lease", 99) / runs[("bare", small)].pct("lease", 99)
    lines.append(
        f"(b) Crowdline lease p99 at {large:,} / at {small:,} tasks: {growth:5.2f}x"
        f"   (target <= 1.3x: {'met' if growth <= 1.3 else 'MISSED'}; bare app: {bare_growth:.2f}x)"
    )
    alone = [solos[("Crowdline", size)] for size in (small, large)]
    lines.append(
        f"    one client alone, lease p50/p99: {alone[0].pct('lease', 50):.1f}/"
        f"{alone[0].pct('lease', 99):.1f} ms at {small:,}, {alone[1].pct('lease', 50):.1f}/"
        f"{alone[1].pct('lease', 99):.1f} ms at {large:,} tasks"
        f" ({alone[1].pct('lease', 99) / alone[0].pct('lease', 99):.2f}x)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--solo", type=float, default=8.0, help="seconds of one client alone")
    parser.add_argument("--sizes", default="10000,1000000", help="tasks in the job, per run")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument("--profile", type=int, default=0, help="round trips to profile")
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.duration, args.warmup, args.solo = "2000,20000", 4.0, 1.0, 2.0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    url = plain_url(args.database_url)
    bare_url = with_database(url, conninfo.conninfo_to_dict(url)["dbname"] + "_bare")
    logs = Path(tempfile.mkdtemp(prefix="bench-leasing-"))
    print(
        f"lease + submit through gunicorn ({args.workers} workers x {args.threads} threads), "
        f"{args.clients} clients, {args.duration:g} s measured after {args.warmup:g} s warm-up; "
        f"{os.cpu_count()} CPUs; server logs in {logs}"
    )
    for target in (url, bare_url):
        ensure_database(target)

    started = time.perf_counter()
    app = build_crowdline(url)
    reset_crowdline(app)
    crowd = make_crowd(app, args.clients)
    took = time.perf_counter() - started
    print(f"  Crowdline: schema and {args.clients} active workers in {took:.1f} s")
    crowdline_routes = Routes(
        "/api/v1/assignments",
        "/api/v1/assignments/{id}/submit",
        [f"Bearer {t}" for t in crowd.worker_tokens],
    )
    bare_routes = Routes(
        "/assignments", "/assignments/{id}/submit", [f"Bearer {i + 1}" for i in range(args.clients)]
    )

    runs: dict[tuple[str, int], Run] = {}
    solos: dict[tuple[str, int], Run] = {}
    for size in sizes:
        print(f"\n{size:,} tasks in the job")
        crowd.jobs[size] = add_job(app, url, crowd, size)
        bare_job = load_bare(bare_url, size)
        runs[("Crowdline", size)], solos[("Crowdline", size)] = measure(
            "Crowdline", size, "wsgi:app", ROOT, url, crowdline_routes, crowd.jobs[size], args, logs
        )
        runs[("bare", size)], solos[("bare", size)] = measure(
            "bare", size, "bare_app:create_app()", ROOT / "bench", bare_url, bare_routes,
            bare_job, args, logs,
        )  # fmt: skip

    print(f"\nEXPLAIN at {sizes[-1]:,} tasks (after the run above)")
    for line in explain(app, url, crowd, crowd.jobs[sizes[-1]]):
        print("  " + line)
    if args.profile:
        print(f"\nwhere a Crowdline round trip's time goes ({sizes[0]:,}-task job)")
        for line in profile(app, crowd, crowd.jobs[sizes[0]], args.profile):
            print("  " + line)
    for line in summary(runs, solos, sizes):
        print(line)
    cpu = {label: runs[(label, sizes[-1])].client_cpu for label in ("Crowdline", "bare")}
    print(
        f"\nload generator CPU in the {sizes[-1]:,}-task runs: Crowdline {cpu['Crowdline']:.1f} s,"
        f" bare {cpu['bare']:.1f} s (of {args.warmup + args.duration:g} s each); "
        f"total {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

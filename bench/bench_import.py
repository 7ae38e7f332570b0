"""Bulk task import through HTTP against a plain PostgreSQL COPY of the same rows.

Rebuilds the database named by DATABASE_URL (default
postgresql://postgres@127.0.0.1/crowdline_bench_import, created when missing) from the
migrations, starts a real server (gunicorn, one sync worker; or werkzeug's threaded server)
on a free port, signs up a client and posts a job through the API, writes --rows JSON Lines
rows (1,000,000 by default: 1 % gold, 20 % pre-labelled) to a temporary file, and streams it
to POST /api/v1/jobs/{id}/tasks with `requests` (chunked, from a generator; or with a
Content-Length, --content-length), printing progress. Then it times a plain `COPY … FROM
STDIN` (psycopg `cursor.copy`) of the same rows, already in COPY's text format, into two
scratch tables:

  * "bare": the tasks table's columns only (no keys, no indexes);
  * "like tasks": the same columns, indexes and constraints as tasks, and its foreign key,
    so the database does what it does for the import.

It prints rows/s for each, the import's share of each COPY rate, the CPU seconds spent by
the server's processes and by the database backends (so that a busy machine, which stretches
wall-clock times, can be seen through), and the server's peak memory (the import streams, so
it should not grow with --rows). With --reimport the same file is sent again (every row then
counts as unchanged). With --repeat N it does all of that N times, each run from an empty
tasks table, and reports medians.

It asserts nothing about speed and is never collected by the test suite.

    .venv/bin/python bench/bench_import.py
    .venv/bin/python bench/bench_import.py --rows 100000 --server werkzeug
    .venv/bin/python bench/bench_import.py --repeat 3 --reimport
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import requests  # noqa: E402
from psycopg import conninfo, sql  # noqa: E402

from jobs.leasing import GOLD_REDUNDANCY  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1/crowdline_bench_import"
CHUNK = 1024 * 1024
SPEC = {"type": "single_choice", "labels": ["cat", "dog", "bird"]}
# The columns the import writes, in the order COPY gets them (id comes from the sequence).
COLUMNS = (
    "job_id",
    "external_id",
    "payload",
    "is_gold",
    "gold_answer",
    "prelabel",
    "prelabel_confidence",
    "status",
    "priority",
    "redundancy_target",
    "live_count",
    "submitted_count",
    "created_at",
)
REDUNDANCY = 3


# ---------------------------------------------------------------------------- database


def plain_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def ensure_database(url: str) -> None:
    """CREATE DATABASE when the one named in `url` does not exist yet."""
    info = conninfo.conninfo_to_dict(plain_url(url))
    with psycopg.connect(**{**info, "dbname": "postgres"}, autocommit=True) as conn:
        if conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (info["dbname"],)
        ).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(info["dbname"])))
        print(f"created database {info['dbname']}")


def reset_schema(url: str) -> None:
    """Drop and recreate schema public, then run the migrations."""
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", "bench")  # keep the app from writing instance/
    from flask_migrate import upgrade
    from sqlalchemy import text

    from marketplace import create_app
    from marketplace.database import db

    app = create_app({"redis_url": None, "jobs_inline": True})
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        logging.disable(logging.INFO)  # alembic's per-migration lines
        try:
            upgrade()
        finally:
            logging.disable(logging.NOTSET)
        db.engine.dispose()


# ---------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(kind: str, url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "bench", "REDIS_URL": ""}
    if kind == "gunicorn":
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers=1",
            f"--bind=127.0.0.1:{port}",
            "--timeout=3600",  # one request streams the whole file
            "--log-level=warning",
            "wsgi:app",
        ]
    else:
        command = [
            sys.executable,
            "-c",
            "from werkzeug.serving import run_simple; from wsgi import app; "
            f"run_simple('127.0.0.1', {port}, app, threaded=True)",
        ]
    # A session of its own, so stop_server can end the server and its workers together.
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok:
                return server
        except requests.RequestException:
            time.sleep(0.2)
    stop_server(server)
    raise SystemExit(f"the {kind} server did not come up on port {port}")


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def process_tree(pid: int) -> list[int]:
    """The pid and its descendants (gunicorn serves from a worker process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def peak_rss_mib(pid: int) -> float:
    """The largest peak resident memory (VmHWM) among the server's processes."""
    peak = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


# ---------------------------------------------------------------------------- data


def task_rows(count: int) -> Iterator[tuple[str, dict, str | None, dict | None, int]]:
    for i in range(count):
        external_id = f"item-{i:07d}"
        payload = {
            "image_url": f"https://cdn.example.org/batch-17/{i:07d}.jpg",
            "width": 640 + i % 7,
            "height": 480,
            "source": "camera-3",
        }
        gold = SPEC["labels"][i % 3] if i % 100 == 0 else None
        prelabel = {"answer": SPEC["labels"][i % 2], "confidence": 0.83} if i % 5 == 1 else None
        yield external_id, payload, gold, prelabel, i % 3


def copy_field(value) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def write_files(count: int, job_id: int, folder: Path) -> tuple[Path, Path]:
    """The rows as JSON Lines (for the import) and as COPY text (for the baseline)."""
    ndjson, copy_text = folder / "tasks.ndjson", folder / "tasks.copy"
    now = datetime.now(UTC).isoformat()
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    with ndjson.open("w") as lines, copy_text.open("w") as copy_rows:
        for external_id, payload, gold, prelabel, priority in task_rows(count):
            row = {"external_id": external_id, "payload": payload, "priority": priority}
            if gold is not None:
                row["gold_answer"] = gold
            if prelabel is not None:
                row["prelabel"] = prelabel
            lines.write(dumps(row) + "\n")
            values = (
                job_id,
                external_id,
                dumps(payload),
                gold is not None,
                dumps(gold) if gold is not None else None,
                dumps(prelabel["answer"]) if prelabel else None,
                prelabel["confidence"] if prelabel else None,
                "open",
                priority,
                GOLD_REDUNDANCY if gold is not None else REDUNDANCY,
                0,
                0,
                now,
            )
            copy_rows.write("\t".join(copy_field(v) for v in values) + "\n")
    return ndjson, copy_text


# ---------------------------------------------------------------------------- the runs


def api_client(base: str) -> tuple[dict[str, str], int]:
    """A client account (token headers) and a draft job."""
    account = {
        "email": "bench-client@example.org",
        "password": "correct horse battery",
        "name": "Bench client",
        "account_type": "client",
        "organization": "Bench labs",
    }
    response = requests.post(f"{base}/api/v1/auth/signup", json=account, timeout=30)
    response.raise_for_status()
    login = {"email": account["email"], "password": account["password"]}
    token = requests.post(f"{base}/api/v1/auth/login", json=login, timeout=30).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    job = {
        "title": "Import bench",
        "instructions": "Pick the animal.",
        "answer_spec": SPEC,
        "price_per_judgment": {"amount": 5, "currency": "USD"},
        "redundancy": {"min": REDUNDANCY, "max": 5, "target_confidence": 0.9},
    }
    response = requests.post(f"{base}/api/v1/jobs", json=job, headers=headers, timeout=30)
    response.raise_for_status()
    return headers, response.json()["id"]


class Progress:
    """Prints how much of the file has gone out, every tenth."""

    def __init__(self, size: int, rows: int):
        self.size, self.rows = size, rows
        self.started, self.sent, self.next_report = time.perf_counter(), 0, 0.1

    def sent_bytes(self, count: int) -> None:
        self.sent += count
        share = self.sent / self.size
        if share >= self.next_report:
            print(
                f"  sent {share:4.0%} ({self.sent / 2**20:7.1f} MiB, ~{self.rows * share:,.0f}"
                f" rows) in {time.perf_counter() - self.started:6.1f} s",
                flush=True,
            )
            self.next_report += 0.1


def chunked(path: Path, progress: Progress) -> Iterator[bytes]:
    """The file in 1 MiB chunks: a generator, so `requests` sends it chunked."""
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk
            progress.sent_bytes(len(chunk))


class SizedFile:
    """The file as a file object of known length: `requests` sends a Content-Length."""

    def __init__(self, path: Path, progress: Progress):
        self.source, self.progress = path.open("rb"), progress
        self.size = path.stat().st_size

    def __len__(self) -> int:
        return self.size

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size if size and size > 0 else CHUNK)
        self.progress.sent_bytes(len(data))
        return data


def run_import(base: str, headers: dict, job_id: int, path: Path, rows: int, length: bool):
    """Seconds, and the response, to import the file (chunked, or with a Content-Length)."""
    progress = Progress(path.stat().st_size, rows)
    body = SizedFile(path, progress) if length else chunked(path, progress)
    started = time.perf_counter()
    response = requests.post(
        f"{base}/api/v1/jobs/{job_id}/tasks",
        data=body,
        headers={**headers, "Content-Type": "application/x-ndjson"},
        timeout=None,
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"import failed: {response.status_code} {response.text[:2000]}")
    return elapsed, response.json()


def checkpoint(url: str) -> None:
    """Start each timed run from a clean slate of dirty buffers."""
    with psycopg.connect(plain_url(url), autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def run_copy(url: str, path: Path, table: str, like_tasks: bool) -> tuple[float, float]:
    """Seconds, and the database backend's CPU seconds, to COPY the file into `table`."""
    with psycopg.connect(plain_url(url)) as conn:
        including = "INCLUDING ALL" if like_tasks else "INCLUDING DEFAULTS"
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (LIKE tasks {including})")
        if like_tasks:
            conn.execute(f"ALTER TABLE {table} ADD FOREIGN KEY (job_id) REFERENCES jobs (id)")
        conn.commit()
    checkpoint(url)
    with psycopg.connect(plain_url(url)) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        cpu_before = process_cpu_seconds(backend)
        started = time.perf_counter()
        statement = f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN"
        with conn.cursor().copy(statement) as copy, path.open("rb") as source:
            while block := source.read(CHUNK):
                copy.write(block)
        conn.commit()
        return time.perf_counter() - started, process_cpu_seconds(backend) - cpu_before


def database_cpu_seconds(url: str) -> float:
    """CPU seconds of every backend connected to the bench database (the server's pool)."""
    name = conninfo.conninfo_to_dict(plain_url(url))["dbname"]
    with psycopg.connect(plain_url(url)) as conn:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return sum(process_cpu_seconds(pid) for (pid,) in pids)


def count_tasks(url: str, job_id: int) -> int:
    with psycopg.connect(plain_url(url)) as conn:
        return conn.execute("SELECT count(*) FROM tasks WHERE job_id = %s", (job_id,)).fetchone()[0]


def truncate_tasks(url: str) -> None:
    """Each run starts from an empty tasks table, as each COPY starts from an empty table."""
    with psycopg.connect(plain_url(url)) as conn:
        conn.execute("TRUNCATE tasks CASCADE")


def one_run(args, url: str, base: str, server, headers, job_id: int, files) -> dict[str, float]:
    ndjson, copy_text = files
    size = ndjson.stat().st_size
    truncate_tasks(url)
    checkpoint(url)
    print("import through HTTP:")
    cpu_before, db_cpu_before = cpu_seconds(server.pid), database_cpu_seconds(url)
    seconds, result = run_import(base, headers, job_id, ndjson, args.rows, args.content_length)
    cpu = cpu_seconds(server.pid) - cpu_before
    db_cpu = database_cpu_seconds(url) - db_cpu_before
    stored = count_tasks(url, job_id)
    print(f"  {result['created']:,} created, {result['error_count']} errors")
    if result["created"] != args.rows or stored != args.rows:
        raise SystemExit(f"expected {args.rows:,} tasks, the job holds {stored:,}")
    rates = {"import": args.rows / seconds}
    print(
        f"  {seconds:.1f} s: {rates['import']:,.0f} rows/s, {size / 2**20 / seconds:.1f} MiB/s;"
        f" CPU: server {cpu:.1f} s, database {db_cpu:.1f} s;"
        f" server peak memory {peak_rss_mib(server.pid):.0f} MiB"
    )
    if args.reimport:
        print("the same file again:")
        seconds, result = run_import(base, headers, job_id, ndjson, args.rows, args.content_length)
        rates["re-import"] = args.rows / seconds
        print(
            f"  {result['unchanged']:,} unchanged, {result['created']} created in "
            f"{seconds:.1f} s: {rates['re-import']:,.0f} rows/s"
        )
    for name, like_tasks in (("bare", False), ("like tasks", True)):
        table = "bench_copy_" + name.replace(" ", "_")
        seconds, copy_cpu = run_copy(url, copy_text, table, like_tasks)
        rates[f"COPY {name}"] = args.rows / seconds
        print(
            f"COPY into a {name} table: {seconds:.1f} s: {args.rows / seconds:,.0f} rows/s;"
            f" CPU: database {copy_cpu:.1f} s"
        )
    return rates


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants."""
    return sum(process_cpu_seconds(member) for member in process_tree(pid))


def process_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--server", choices=("gunicorn", "werkzeug"), default="gunicorn")
    parser.add_argument("--reimport", action="store_true", help="send the file a second time")
    parser.add_argument("--repeat", type=int, default=1, help="runs; medians are reported")
    parser.add_argument(
        "--content-length",
        action="store_true",
        help="send the file with a Content-Length instead of chunked",
    )
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", DEFAULT_URL)

    ensure_database(url)
    reset_schema(url)
    port = free_port()
    server = start_server(args.server, url, port)
    base = f"http://127.0.0.1:{port}"
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="crowdline-import-bench-") as folder:
            headers, job_id = api_client(base)
            started = time.perf_counter()
            files = write_files(args.rows, job_id, Path(folder))
            print(
                f"{args.rows:,} rows: {files[0].stat().st_size / 2**20:.1f} MiB of JSON Lines "
                f"(written in {time.perf_counter() - started:.1f} s); {args.server} on {base}"
            )
            for run in range(args.repeat):
                if args.repeat > 1:
                    print(f"--- run {run + 1} of {args.repeat}")
                runs.append(one_run(args, url, base, server, headers, job_id, files))
    finally:
        stop_server(server)

    median = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    print()
    print(f"{args.rows:,} rows" + (f", median of {len(runs)} runs" if len(runs) > 1 else ""))
    for name, rate in median.items():
        share = ""
        if name.startswith("COPY"):
            share = f"   import/COPY = {median['import'] / rate:.0%}"
            if len(runs) > 1:
                ratios = ", ".join(f"{run['import'] / run[name]:.0%}" for run in runs)
                share += f" (runs: {ratios})"
        print(f"{name:<16} {rate:10,.0f} rows/s{share}")
    # The import writes into the tasks table, indexes and all: a COPY of the same rows into
    # a table like it is the comparison the target means. The bare table bounds what any
    # writer could reach without keeping those indexes.
    verdict = "met" if median["import"] >= 0.5 * median["COPY like tasks"] else "MISSED"
    print(f"target: import at least 50% of the rate of COPY into a table like tasks: {verdict}")


if __name__ == "__main__":
    main()

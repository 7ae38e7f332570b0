"""Sign-in and authenticated-request throughput, measured through the app's test client.

Builds the app on a temporary SQLite database (schema from the migrations), signs up
`--users` accounts, then measures:

  * sign-in:  POST /api/v1/auth/login (argon2id verification + token issue)
  * account:  GET /api/v1/account with a bearer token (token lookup + user load)

and prints requests per second with p50/p95/max latency. It asserts nothing about speed:
the figures are for comparing changes on the same machine.

    make bench
    make bench BENCH_ARGS="--users 50 --requests 2000"
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PASSWORD = "correct horse battery staple"


def build_app(folder: str):
    from flask_migrate import upgrade

    from marketplace import create_app

    app = create_app(
        {
            "database_url": f"sqlite:///{folder}/bench.db",
            "redis_url": None,
            "jobs_inline": True,
            "secret_key": "bench",
            # The benchmark signs the same people in many times; do not rate-limit it.
            "login_attempts_per_window": 10**9,
        }
    )
    with app.app_context():
        upgrade()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return app


def timed(label: str, count: int, call: Callable[[int], None]) -> list[float]:
    """Run `call(i)` for i in range(count), printing progress; returns each latency in s."""
    latencies: list[float] = []
    interactive = sys.stdout.isatty()
    step = max(1, count // (20 if interactive else 4))
    started = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - t0)
        if (i + 1) % step == 0 or i + 1 == count:
            rate = (i + 1) / (time.perf_counter() - started)
            line = f"  {label:<10} {i + 1:>6}/{count}  {rate:8.1f}/s"
            print(f"\r{line}" if interactive else line, end="" if interactive else "\n", flush=True)
    if interactive:
        print()
    return latencies


def summarise(label: str, latencies: list[float]) -> str:
    total = sum(latencies)
    ms = sorted(x * 1000 for x in latencies)
    if len(ms) >= 2:
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        p50, p95 = cuts[49], cuts[94]
    else:
        p50 = p95 = ms[0]
    return (
        f"  {label:<34} {len(ms):>6}  {len(ms) / total:9.1f}/s  "
        f"p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  max {ms[-1]:7.2f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20, help="accounts to create (default 20)")
    parser.add_argument(
        "--logins", type=int, default=None, help="sign-ins to time (default 3 per user)"
    )
    parser.add_argument(
        "--requests", type=int, default=1000, help="authenticated GETs to time (default 1000)"
    )
    args = parser.parse_args(argv)
    if args.users < 1 or args.requests < 1:
        parser.error("--users and --requests must be at least 1")
    logins = args.logins if args.logins is not None else 3 * args.users

    with tempfile.TemporaryDirectory(prefix="crowdline-bench-") as folder:
        print(f"Building the app on a temporary SQLite database in {folder} …", flush=True)
        app = build_app(folder)
        client = app.test_client()
        emails = [f"bench{i}@example.org" for i in range(args.users)]

        def sign_up(i: int) -> None:
            body = {
                "email": emails[i],
                "password": PASSWORD,
                "name": f"Bench {i}",
                "account_type": "worker",
            }
            # Sign-ups are limited per address; give each its own.
            environ = {"REMOTE_ADDR": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"}
            response = client.post("/api/v1/auth/signup", json=body, environ_base=environ)
            if response.status_code != 201:
                raise SystemExit(f"sign-up failed: {response.status_code} {response.get_json()}")

        tokens: list[str] = []

        def sign_in(i: int) -> None:
            body = {"email": emails[i % len(emails)], "password": PASSWORD}
            response = client.post("/api/v1/auth/login", json=body)
            if response.status_code != 200:
                raise SystemExit(f"sign-in failed: {response.status_code} {response.get_json()}")
            tokens.append(response.get_json()["access_token"])

        def read_account(i: int) -> None:
            headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            response = client.get("/api/v1/account", headers=headers)
            if response.status_code != 200:
                raise SystemExit(f"GET /account failed: {response.status_code}")

        print(f"Signing up {args.users} users …", flush=True)
        signups = timed("sign-up", args.users, sign_up)
        print(f"Timing {logins} sign-ins …", flush=True)
        signins = timed("sign-in", logins, sign_in)
        print(f"Timing {args.requests} authenticated GET /api/v1/account …", flush=True)
        reads = timed("account", args.requests, read_account)

    print()
    print("Crowdline auth benchmark (one thread, Flask test client, SQLite)")
    print(summarise("sign-up   POST /api/v1/auth/signup", signups))
    print(summarise("sign-in   POST /api/v1/auth/login", signins))
    print(summarise("read      GET  /api/v1/account", reads))
    return 0


if __name__ == "__main__":
    sys.exit(main())

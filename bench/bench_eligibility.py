"""Eligibility at scale on PostgreSQL: list every worker who may take a job.

Rebuilds the database named by DATABASE_URL (default
postgresql://postgres@127.0.0.1/crowdline_bench, created when missing) from the migrations,
bulk-loads a synthetic workforce with COPY — 100,000 workers, 200 skills, 20 clearance types,
10 private crowds by default — runs VACUUM ANALYZE, then times:

  * eligible_workers() for several requirement sets, fetching every eligible id
    (median and p95 over --runs runs, after one warm-up);
  * check() and is_eligible() for single workers (the per-lease / per-submit path);
  * EXPLAIN ANALYZE of the heaviest realistic query (planning and execution time).

Every required skill or clearance is one EXISTS semi-join, and PostgreSQL's join-order search
grows fast with their number: --join-collapse-limit 1 shows the planning time it saves.

It asserts nothing about speed and is never collected by the test suite.

    .venv/bin/python bench/bench_eligibility.py
    .venv/bin/python bench/bench_eligibility.py --workers 5000          # quick smoke run
    .venv/bin/python bench/bench_eligibility.py --reuse                 # keep loaded data
    .venv/bin/python bench/bench_eligibility.py --reuse --plan          # the whole plan
    .venv/bin/python bench/bench_eligibility.py --reuse \\
        --try-index "CREATE INDEX ix_try ON worker_skills (skill_id, worker_id)"

--try-index creates the index in the bench database, times the queries again, and drops it.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from psycopg import conninfo, sql
from psycopg.types.json import Jsonb

DEFAULT_URL = "postgresql://postgres@127.0.0.1/crowdline_bench"
PLAN_TIMES = ("Planning Time", "Execution Time")

COUNTRIES = {  # rough shape of a global labeling crowd; None is "not given"
    "IN": 18, "PH": 12, "US": 10, "KE": 8, "NG": 7, "VE": 5, "BR": 5, "PK": 5, "ID": 4,
    "MX": 4, "EG": 3, "CO": 3, "VN": 3, "GB": 2, "DE": 2, "ES": 2, "UA": 2, "PL": 2,
    "FR": 1, "AR": 1, None: 3,
}  # fmt: skip
LANGUAGES = {
    "en": 70, "es": 14, "hi": 10, "tl": 8, "sw": 6, "pt": 6, "ar": 5, "fr": 5, "ur": 4,
    "id": 4, "de": 3, "vi": 3, "yo": 3, "pl": 2, "uk": 2,
}  # fmt: skip
STATUSES = {
    "active": 60, "applied": 12, "screening": 10, "suspended": 8, "banned": 3, "offboarded": 7,
}  # fmt: skip
ATTESTATION_STATUSES = {"verified": 70, "pending": 10, "rejected": 5, "revoked": 5, "expired": 10}
DOMAINS = (
    "image", "text", "audio", "video", "medical", "legal", "finance", "code", "geo", "retail",
    "speech", "nlp.es", "nlp.hi", "nlp.ar", "nlp.fr", "robotics", "autonomous", "safety",
    "search", "ecommerce",
)  # fmt: skip
CLEARANCES = (
    "nda", "background-check", "hipaa-training", "gdpr-training", "pci-dss", "soc2-awareness",
    "security-clearance", "child-safety-training", "financial-conduct", "export-control",
    "client-acme-nda", "client-globex-nda", "client-initech-nda", "client-umbrella-nda",
    "drug-test", "identity-verified", "tax-form", "medical-license", "bar-admission",
    "content-moderation-wellness",
)  # fmt: skip


# ---------------------------------------------------------------------------- database


def ensure_database(url: str) -> None:
    """CREATE DATABASE when the one named in `url` does not exist yet."""
    info = conninfo.conninfo_to_dict(url.replace("postgresql+psycopg://", "postgresql://"))
    name = info["dbname"]
    with psycopg.connect(**{**info, "dbname": "postgres"}, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"created database {name}")


def build_app(url: str):
    os.environ["DATABASE_URL"] = url  # read (and given its driver) by Settings.from_env
    os.environ.setdefault("SECRET_KEY", "bench")  # keep the bench from writing instance/
    from marketplace import create_app

    app = create_app({"redis_url": None, "jobs_inline": True})
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return app


def reset_schema(app) -> None:
    from flask_migrate import upgrade
    from sqlalchemy import text

    from marketplace.database import db

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


# ---------------------------------------------------------------------------- data


def weighted(rng: random.Random, table: dict[Any, int]) -> Callable[[], Any]:
    keys, weights = list(table), list(itertools.accumulate(table.values()))
    return lambda: rng.choices(keys, cum_weights=weights)[0]


def zipf_weights(n: int, s: float) -> list[float]:
    return list(itertools.accumulate(1 / (rank + 1) ** s for rank in range(n)))


@dataclass
class Catalog:
    skills: list[str]  # slug, index = id - 1; skills of domain d are d*per_domain...
    per_domain: int
    clearances: list[str]  # index = id - 1
    crowd_ids: list[int]


class Loader:
    """Generates the workforce and streams it into PostgreSQL with COPY."""

    def __init__(self, conn: psycopg.Connection, args: argparse.Namespace, now: datetime):
        self.conn = conn
        self.args = args
        self.now = now
        self.rng = random.Random(args.seed)
        self.counts: dict[str, int] = {}

    def copy(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        started = time.perf_counter()
        n = 0
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self.conn.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                n += 1
        took = time.perf_counter() - started
        print(f"  {table:<18} {n:>9,} rows  {took:6.2f} s  {n / max(took, 1e-9):>10,.0f} rows/s")
        self.counts[table] = n
        return n

    def load(self) -> Catalog:
        args, rng, now = self.args, self.rng, self.now
        created = now - timedelta(days=800)

        self.copy(
            "organizations",
            ("id", "name", "kind", "created_at"),
            [(i, f"Vendor {i}", "vendor", created) for i in range(1, 5)],
        )
        per_domain = max(1, args.skills // len(DOMAINS))
        skills = [
            f"{DOMAINS[i // per_domain % len(DOMAINS)]}.task{i % per_domain}"
            + ("" if i < per_domain * len(DOMAINS) else f".x{i}")
            for i in range(args.skills)
        ]
        self.copy(
            "skills",
            ("id", "slug", "name", "description", "created_at"),
            [(i + 1, slug, slug, "", created) for i, slug in enumerate(skills)],
        )
        clearances = [
            CLEARANCES[i] if i < len(CLEARANCES) else f"clearance-{i}"
            for i in range(args.clearances)
        ]
        self.copy(
            "clearance_types",
            ("id", "slug", "name", "description", "validity_days", "verifier", "evidence",
             "created_at"),
            [
                (i + 1, slug, slug, "", 365, "platform", "any", created)
                for i, slug in enumerate(clearances)
            ],
        )  # fmt: skip
        crowd_ids = list(range(1, args.crowds + 1))
        self.copy(
            "crowds",
            ("id", "organization_id", "name", "description", "created_at"),
            [(c, (c - 1) % 4 + 1, f"Crowd {c}", "", created) for c in crowd_ids],
        )

        n = args.workers
        self.copy(
            "users",
            ("id", "email", "email_normalized", "name", "password_hash", "account_type",
             "status", "created_at", "password_changed_at"),
            (
                (i, f"w{i}@bench.example", f"w{i}@bench.example", f"Worker {i}", "!",
                 "worker", "active", created, created)
                for i in range(1, n + 1)
            ),
        )  # fmt: skip

        status = weighted(rng, STATUSES)
        country = weighted(rng, COUNTRIES)
        language = weighted(rng, LANGUAGES)
        profiles, languages = [], []
        for i in range(1, n + 1):
            codes: list[str] = []
            for _ in range(rng.choices((1, 2, 3), (55, 35, 10))[0]):
                code = language()
                if code not in codes:
                    codes.append(code)
            entries = [{"code": c, "proficiency": "fluent"} for c in codes]
            languages.extend((i, c, "fluent") for c in codes)
            joined = created + timedelta(seconds=rng.randrange(700 * 86400))
            profiles.append(
                (i, i, f"w_{i:016x}", f"Worker {i}", status(), joined, country(),
                 Jsonb(entries), Jsonb({}), Jsonb([]), joined)
            )  # fmt: skip
        self.copy(
            "worker_profiles",
            ("id", "user_id", "pseudonym", "display_name", "status", "status_changed_at",
             "country", "languages", "availability", "claimed_skills", "created_at"),
            profiles,
        )  # fmt: skip
        del profiles
        self.copy("worker_languages", ("worker_id", "code", "proficiency"), languages)
        del languages

        self.copy(
            "worker_skills",
            ("worker_id", "skill_id", "level", "source", "granted_at", "expires_at"),
            self._worker_skills(n, len(skills), per_domain),
        )
        members = list(self._crowd_members(n, crowd_ids))
        in_crowd = {row[1] for row in members}
        self.copy(
            "attestations",
            ("worker_id", "clearance_type_id", "status", "note", "submitted_at", "decided_at",
             "expires_at", "revoked_at"),
            self._attestations(n, len(clearances), in_crowd),
        )  # fmt: skip
        self.copy("crowd_members", ("crowd_id", "worker_id", "joined_at", "source"), members)
        with self.conn.cursor() as cur:
            for table in ("organizations", "skills", "clearance_types", "crowds", "users",
                          "worker_profiles"):  # fmt: skip
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 1) FROM {table}))"
                )
        self.conn.commit()
        return Catalog(skills, per_domain, clearances, crowd_ids)

    def _worker_skills(self, n: int, n_skills: int, per_domain: int):
        """0–8 skills each; most from the worker's own domain, popular skills more often."""
        rng, now = self.rng, self.now
        n_domains = max(1, min(len(DOMAINS), n_skills // per_domain))
        domain_w = zipf_weights(n_domains, 0.9)
        in_domain_w = zipf_weights(per_domain, 0.8)
        global_w = zipf_weights(n_skills, 0.7)
        ids = range(n_skills)
        for worker in range(1, n + 1):
            domain = rng.choices(range(n_domains), cum_weights=domain_w)[0]
            count = rng.choices(range(9), (8, 12, 15, 16, 15, 12, 10, 7, 5))[0]
            held: set[int] = set()
            for _ in range(count):
                if rng.random() < 0.75:
                    skill = (
                        domain * per_domain
                        + rng.choices(range(per_domain), cum_weights=in_domain_w)[0]
                    )
                else:
                    skill = rng.choices(ids, cum_weights=global_w)[0]
                held.add(skill)
            for skill in held:
                level = max(0, min(100, round(rng.gauss(68, 16))))
                granted = now - timedelta(seconds=rng.randrange(540 * 86400))
                source = "assessment" if rng.random() < 0.8 else "performance"
                # 40% never expire; the rest hold a year from the grant (some lapsed already)
                expires = None if rng.random() < 0.4 else granted + timedelta(days=365)
                yield (worker, skill + 1, level, source, granted, expires)

    def _attestations(self, n: int, n_clearances: int, in_crowd: set[int]):
        """0–3 per worker, mostly verified; some expired, revoked, pending or rejected.

        Vendors run clearance checks on their crowds, so crowd members hold more of them.
        """
        rng, now = self.rng, self.now
        clearance_w = zipf_weights(n_clearances, 1.0)
        status = weighted(rng, ATTESTATION_STATUSES)
        ids = range(1, n_clearances + 1)
        for worker in range(1, n + 1):
            weights = (10, 25, 35, 30) if worker in in_crowd else (50, 30, 14, 6)
            count = rng.choices(range(4), weights)[0]
            for clearance in {rng.choices(ids, cum_weights=clearance_w)[0] for _ in range(count)}:
                s = status()
                submitted = now - timedelta(seconds=rng.randrange(450 * 86400))
                decided = None if s == "pending" else submitted + timedelta(days=2)
                expires = revoked = None
                if s in ("verified", "revoked"):
                    # a verified one past its date but not yet swept by the periodic job counts
                    # as expired too, so eligibility must check the date, not only the status
                    expires = submitted + timedelta(days=365) if rng.random() < 0.85 else None
                elif s == "expired":
                    expires = now - timedelta(seconds=rng.randrange(1, 300 * 86400))
                if s == "revoked":
                    revoked = decided + timedelta(days=rng.randrange(1, 200))
                yield (worker, clearance, s, "", submitted, decided, expires, revoked)

    def _crowd_members(self, n: int, crowd_ids: list[int]):
        """About a third of workers are in a private crowd, some in two or three."""
        rng, now = self.rng, self.now
        crowd_w = zipf_weights(len(crowd_ids), 0.8)
        for worker in range(1, n + 1):
            if rng.random() >= 0.35:
                continue
            count = rng.choices((1, 2, 3), (75, 20, 5))[0]
            for crowd in {rng.choices(crowd_ids, cum_weights=crowd_w)[0] for _ in range(count)}:
                yield (crowd, worker, now - timedelta(days=rng.randrange(400)), "invitation")


def loaded_catalog(n_skills: int) -> Catalog:
    """The catalog of a database loaded by an earlier run (--reuse)."""
    from sqlalchemy import select

    from credentials.models import ClearanceType, Skill
    from marketplace.database import db
    from workers.models import Crowd

    return Catalog(
        skills=list(db.session.scalars(select(Skill.slug).order_by(Skill.id))),
        per_domain=max(1, n_skills // len(DOMAINS)),
        clearances=list(db.session.scalars(select(ClearanceType.slug).order_by(ClearanceType.id))),
        crowd_ids=list(db.session.scalars(select(Crowd.id).order_by(Crowd.id))),
    )


# ---------------------------------------------------------------------------- timing


def requirement_sets(catalog: Catalog) -> dict[str, dict[str, Any]]:
    skills, per = catalog.skills, catalog.per_domain
    return {
        "1 skill": {"skills": [{"skill": skills[0], "min_level": 60}]},
        "2 skills + 1 clearance": {
            "skills": [
                {"skill": skills[0], "min_level": 50},
                {"skill": skills[min(2, per - 1)], "min_level": 50},
            ],
            "clearances": [catalog.clearances[0]],
        },
        "3 skills + 2 clr + country + lang + crowd": {
            "skills": [
                {"skill": skills[i], "min_level": 30} for i in (0, min(1, per - 1), min(2, per - 1))
            ],
            "clearances": catalog.clearances[:2],
            "countries": ["IN", "PH", "US", "KE", "NG", "BR", "MX"],
            "languages": ["en"],
            "crowds": catalog.crowd_ids[:3],
        },
        "public crowd (every active worker)": {"crowds": ["public"]},
        # the API accepts up to 50 of each; each one is another semi-join for the planner
        "20 skills + 10 clearances": {
            "skills": [{"skill": slug, "min_level": 0} for slug in skills[:20]],
            "clearances": catalog.clearances[:10],
        },
    }


def quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    if len(ordered) < 2:
        return ordered[0], ordered[0]
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return cuts[49], cuts[94]


@dataclass
class Timing:
    label: str
    rows: int
    median_ms: float
    p95_ms: float


def planner_settings(conn, collapse_limit: int | None) -> None:
    """SET LOCAL join_collapse_limit for this transaction, when asked (--join-collapse-limit)."""
    from sqlalchemy import text

    if collapse_limit is not None:
        conn.execute(text(f"SET LOCAL join_collapse_limit = {int(collapse_limit)}"))


def time_queries(
    app, sets: dict[str, dict[str, Any]], runs: int, at: datetime, collapse_limit: int | None
) -> list[Timing]:
    from credentials.eligibility import Requirements, eligible_workers
    from marketplace.database import db

    results = []
    with app.app_context():
        for label, data in sets.items():
            requirements = Requirements.from_dict(data)
            samples, rows = [], 0
            for run in range(runs + 1):  # the first run warms caches and is not counted
                planner_settings(db.session, collapse_limit)
                started = time.perf_counter()
                ids = db.session.scalars(eligible_workers(requirements, at)).all()
                took = time.perf_counter() - started
                db.session.rollback()
                if run:
                    samples.append(took * 1000)
                rows = len(ids)
            median, p95 = quantiles(samples)
            results.append(Timing(label, rows, median, p95))
            print(f"  {label:<42} {rows:>7,} rows  median {median:8.1f} ms  p95 {p95:8.1f} ms")
    return results


def time_single_worker(app, data: dict[str, Any], samples: int, at: datetime, seed: int):
    """check() (every reason) and is_eligible() (the SQL form) for random single workers."""
    from sqlalchemy import func, select

    from credentials.eligibility import Requirements, check, is_eligible
    from marketplace.database import db
    from workers.models import WorkerProfile

    requirements = Requirements.from_dict(data)
    rng = random.Random(seed)
    out = {}
    with app.app_context():
        top = db.session.scalar(select(func.max(WorkerProfile.id)))
        ids = [rng.randint(1, top) for _ in range(samples)]
        check_ms, query_ms = [], []
        for worker_id in ids:
            worker = db.session.get(WorkerProfile, worker_id)
            started = time.perf_counter()
            check(worker, requirements, at)
            check_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            is_eligible(worker_id, requirements, at)
            query_ms.append((time.perf_counter() - started) * 1000)
            db.session.rollback()
        out["check()"] = quantiles(check_ms)
        out["is_eligible()"] = quantiles(query_ms)
    for label, (median, p95) in out.items():
        print(f"  {label:<15} median {median:6.2f} ms  p95 {p95:6.2f} ms  ({samples} workers)")
    return out


def explain(app, data: dict[str, Any], at: datetime, collapse_limit: int | None) -> list[str]:
    from sqlalchemy.ext.compiler import compiles
    from sqlalchemy.sql.expression import ClauseElement, Executable

    from credentials.eligibility import Requirements, eligible_workers
    from marketplace.database import db

    class ExplainAnalyze(Executable, ClauseElement):
        inherit_cache = False

        def __init__(self, statement):
            self.statement = statement

    @compiles(ExplainAnalyze, "postgresql")
    def _compile(element, compiler, **kw):
        return "EXPLAIN (ANALYZE, BUFFERS) " + compiler.process(element.statement, **kw)

    with app.app_context():
        query = eligible_workers(Requirements.from_dict(data), at)
        with db.engine.connect() as conn:
            planner_settings(conn, collapse_limit)
            return [row[0] for row in conn.execute(ExplainAnalyze(query))]


def try_indexes(app, statements: list[str], run: Callable[[], list[Timing]]) -> list[Timing]:
    from sqlalchemy import text

    from marketplace.database import db

    created = []
    with app.app_context(), db.engine.begin() as conn:
        for statement in statements:
            print(f"  {statement}")
            conn.execute(text(statement))
            name = statement.split(" ON ")[0].split()[-1]
            created.append(name)
        conn.execute(text("ANALYZE"))
    try:
        return run()
    finally:
        with app.app_context(), db.engine.begin() as conn:
            for name in created:
                conn.execute(text(f"DROP INDEX IF EXISTS {name}"))


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=100_000)
    parser.add_argument("--skills", type=int, default=200)
    parser.add_argument("--clearances", type=int, default=20)
    parser.add_argument("--crowds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per requirement set")
    parser.add_argument("--single", type=int, default=200, help="workers for check() timing")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--reuse", action="store_true", help="keep the data already loaded")
    parser.add_argument("--plan", action="store_true", help="print the whole query plan")
    parser.add_argument(
        "--join-collapse-limit",
        type=int,
        metavar="N",
        help="SET LOCAL join_collapse_limit = N before each query (planning-time experiment)",
    )
    parser.add_argument(
        "--try-index", action="append", default=[], metavar="SQL", help="CREATE INDEX to try"
    )
    args = parser.parse_args()

    url = args.database_url
    if not url.startswith(("postgresql", "postgres:")):
        sys.exit("bench_eligibility needs PostgreSQL (DATABASE_URL=postgresql://…)")
    ensure_database(url)
    app = build_app(url)
    at = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # fixed, so every run sees the same data

    from sqlalchemy import func, select

    from marketplace.database import db
    from workers.models import WorkerProfile

    load_seconds = None
    if args.reuse:
        with app.app_context():
            present = db.session.scalar(select(func.count()).select_from(WorkerProfile))
            catalog = loaded_catalog(args.skills)
        print(f"reusing {present:,} loaded workers")
    else:
        print(f"rebuilding the schema in {url.rsplit('/', 1)[-1]} from the migrations")
        reset_schema(app)
        print(
            f"loading {args.workers:,} workers, {args.skills} skills, "
            f"{args.clearances} clearance types, {args.crowds} crowds"
        )
        started = time.perf_counter()
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as conn:
            catalog = Loader(conn, args, at).load()
        load_seconds = time.perf_counter() - started
        print(f"  loaded in {load_seconds:.1f} s; VACUUM ANALYZE …", end=" ", flush=True)
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        print(f"{time.perf_counter() - started:.1f} s")

    sets = requirement_sets(catalog)
    heaviest = "3 skills + 2 clr + country + lang + crowd"

    print(f"\neligible_workers(), every id fetched, {args.runs} runs after a warm-up")
    limit = args.join_collapse_limit
    if limit is not None:
        print(f"  (SET LOCAL join_collapse_limit = {limit})")
    timings = time_queries(app, sets, args.runs, at, limit)

    print(f"\nsingle worker, requirements '{heaviest}'")
    single = time_single_worker(app, sets[heaviest], args.single, at, args.seed)

    print(f"\nEXPLAIN ANALYZE, '{heaviest}'")
    plan = explain(app, sets[heaviest], at, limit)
    summary = [plan[0]] + [line for line in plan if line.lstrip().startswith(PLAN_TIMES)]
    for line in plan if args.plan else summary:
        print(f"  {line}")

    tried: list[Timing] = []
    if args.try_index:
        print("\nwith the extra indexes")
        tried = try_indexes(
            app, args.try_index, lambda: time_queries(app, sets, args.runs, at, limit)
        )

    print("\nsummary")
    with app.app_context():
        workers = db.session.scalar(select(func.count()).select_from(WorkerProfile))
    print(f"  workers {workers:,}", end="")
    if load_seconds is not None:
        print(f"   load (COPY) {load_seconds:.1f} s", end="")
    print()
    header = f"  {'requirement set':<42} {'rows':>8} {'median ms':>10} {'p95 ms':>9}"
    if tried:
        header += f" {'+index med':>11} {'+index p95':>11}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for n, t in enumerate(timings):
        line = f"  {t.label:<42} {t.rows:>8,} {t.median_ms:>10.1f} {t.p95_ms:>9.1f}"
        if tried:
            line += f" {tried[n].median_ms:>11.1f} {tried[n].p95_ms:>11.1f}"
        print(line)
    for label, (median, p95) in single.items():
        print(f"  {label + ' (one worker)':<42} {'':>8} {median:>10.2f} {p95:>9.2f}")
    times = ", ".join(line.strip().lower() for line in plan if line.lstrip().startswith(PLAN_TIMES))
    print(f"  '{heaviest}' in the server: {times}")


if __name__ == "__main__":
    main()

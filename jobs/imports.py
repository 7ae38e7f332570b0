"""Bulk task import: JSON Lines or CSV, read as a stream and written in batches.

Rows are checked one at a time and written a few thousand at a time, so a body of a million
rows never sits in memory. Before a batch is written its external_ids are looked up in the
job: the same content counts as `unchanged` (re-importing a file is harmless), different
content is a row error, and so is an external_id twice in one upload.

Imports into one job take turns (a PostgreSQL advisory lock; SQLite has one writer anyway),
so that look-up cannot race another import of the same file, and new rows can go in with
`COPY` on PostgreSQL, about twice the rate of a batched INSERT there. One COPY stays open
from batch to batch until a look-up needs the connection: the database takes in rows while
this process reads the next ones, instead of each waiting for the other at every batch. On
a first import (the job holds no external_id yet) look-ups are rare (see _SeenFilter), so
a million rows usually go in as one COPY. The (job_id, external_id) unique constraint stays
the last word: should anything else slip a row in, the import is refused with 409 and may
simply be retried.

The whole import is one transaction: by default any row error rolls it all back (422 with
the row errors); with `partial` the valid rows are kept and the errors reported.

Reading and checking the rows is jobs.import_rows.
"""

from __future__ import annotations

import json
from typing import IO, Any

import orjson
from sqlalchemy import func, insert, null, select, text
from sqlalchemy.exc import IntegrityError

from jobs import import_rows
from jobs.access import get_job
from jobs.import_rows import CSV, Errors
from jobs.leasing import GOLD_REDUNDANCY
from jobs.models import Job, JobStatus, Task, TaskStatus
from marketplace import audit, clock
from marketplace.database import db
from marketplace.errors import Conflict, ValidationFailed

# Rows a batch: each costs a look-up and a write round trip, so bigger batches are faster
# (5,000 measured ~25 % faster than 1,000 on PostgreSQL) while a batch stays a few MB.
BATCH_SIZE = 5000
MAX_REPORTED_ERRORS = 1000
IMPORTABLE = (JobStatus.DRAFT, JobStatus.ACTIVE, JobStatus.PAUSED)

_TASKS = Task.__table__
# A row's own values first, then those every row of a kind (gold or not) shares.
_COLUMNS = (
    "external_id",
    "payload",
    "gold_answer",
    "prelabel",
    "prelabel_confidence",
    "priority",
    "is_gold",
    "redundancy_target",
    "job_id",
    "status",
    "live_count",
    "submitted_count",
    "created_at",
)
_OPEN = TaskStatus.OPEN.value
_JSON_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def _copy_json(value: Any) -> bytes:
    """Compact JSON as a field of COPY's text format; orjson where it can (integers past 64
    bits it cannot). JSON text holds no raw tab, newline or carriage return, so doubling its
    backslashes is all the escaping it needs."""
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError:
        text = _JSON_ENCODE(value).encode()
    return text.replace(b"\\", b"\\\\") if b"\\" in text else text


def _copy_text(value: str) -> bytes:
    """A string as a field of COPY's text format."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = (value.replace("\\", "\\\\").replace("\t", "\\t")
                 .replace("\n", "\\n").replace("\r", "\\r"))  # fmt: skip
    return value.encode()


# external_id, then what must match for a re-imported row to count as unchanged
_CONTENT = (
    Task.external_id,
    Task.payload,
    Task.gold_answer,
    Task.prelabel,
    Task.prelabel_confidence,
    Task.priority,
)
# One unique-index probe per external_id, whatever the statistics say (`external_id =
# ANY(…)` let the planner guess, from statistics gone stale while the import grew the table,
# that most rows match, and scan the whole job for every batch). A row this transaction
# wrote has its xid as xmin; created_at rules out an old frozen row whose xid came round.
_LOOKUP = (
    "SELECT t.xmin = pg_current_xact_id_if_assigned()::xid AND t.created_at = %(now)s, "
    f"t.{', t.'.join(c.name for c in _CONTENT)} "
    "FROM unnest(%(external_ids)s::text[]) AS wanted (external_id) CROSS JOIN LATERAL ("
    f"SELECT xmin, created_at, {', '.join(c.name for c in _CONTENT)} FROM {_TASKS.name} "
    "WHERE job_id = %(job_id)s AND external_id = wanted.external_id) AS t"
)
_COPY = f"COPY {_TASKS.name} ({', '.join(_COLUMNS)}) FROM STDIN"
_UNIQUE_VIOLATION = "23505"


def import_tasks(job_id: int, body: IO[bytes], media_type: str, *, partial: bool) -> dict:
    """Import a stream of tasks into a job; all or nothing unless `partial`."""
    job = get_job(job_id)
    if db.session.get_bind().dialect.name == "postgresql":
        # Imports into one job take turns (see the module docstring).
        db.session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(f"task_import:{job.id}", 0)))
        )
        # Our connections plan every statement afresh (marketplace.config: the lease query
        # needs it), and so would the foreign-key check COPY runs for each row: planning it
        # a million times took as long as the COPY itself. Its cached plan is right.
        db.session.execute(text("SET LOCAL plan_cache_mode = auto"))
    # KEY SHARE: lifecycle changes (cancel, activate, fund) wait for the import to finish,
    # while leasing and submitting, which update the job row without a lock, do not.
    db.session.execute(
        select(Job.id).where(Job.id == job.id).with_for_update(read=True, key_share=True)
    )
    db.session.refresh(job)
    if job.status not in IMPORTABLE:
        raise Conflict(f"Tasks cannot be added to a {job.status.value} job.")
    is_csv = media_type == CSV
    read = import_rows.csv_records if is_csv else import_rows.ndjson_records
    run = _TaskImport(job)
    try:
        try:
            for row, record, values, errors in read(body, job.answer_spec):
                run.take(row, record, values, errors)
            run.flush()
        except BaseException as error:
            run.end_copy(error)  # the database drops the rows of an unfinished COPY
            raise
        run.end_copy()
    except Exception as error:
        if isinstance(error, IntegrityError) or getattr(error, "sqlstate", None) == (
            _UNIQUE_VIOLATION
        ):
            raise Conflict(
                "Another write added some of these external_ids while the import ran; send "
                "the file again (rows already there will count as unchanged)."
            ) from error
        raise
    outcome = run.outcome()
    if outcome["error_count"] and not partial:
        raise ValidationFailed(
            f"{outcome['error_count']} of {run.rows} rows have errors, so nothing was "
            "imported; fix them, or send ?partial=true to import the valid rows.",
            errors=outcome["errors"],
            created=0,
            unchanged=0,
            error_count=outcome["error_count"],
            rows=run.rows,
        )
    audit.record(
        "job.tasks_imported",
        "job",
        job.id,
        organization_id=job.organization_id,
        detail={
            "format": "csv" if is_csv else "ndjson",
            "partial": partial,
            "rows": run.rows,
            "created": outcome["created"],
            "unchanged": outcome["unchanged"],
            "error_count": outcome["error_count"],
        },
    )
    db.session.commit()
    return outcome


class _ErrorLog:
    """Row errors: all counted, the first MAX_REPORTED_ERRORS kept, in row order."""

    def __init__(self):
        self.count = 0
        self.entries: list[dict[str, Any]] = []

    def add(self, row: int, errors: Errors, external_id: Any = None) -> None:
        self.count += 1
        if len(self.entries) < MAX_REPORTED_ERRORS:
            entry: dict[str, Any] = {"row": row, "errors": errors}
            if isinstance(external_id, str) and not import_rows.unstorable(external_id):
                entry["external_id"] = external_id[: import_rows.MAX_EXTERNAL_ID]
            self.entries.append(entry)


class _TaskImport:
    """One import: batches rows as they are read, then looks them up and writes them.

    Errors found when reading (take) and when writing a batch (_write) are logged apart, each
    in row order; outcome() merges them."""

    def __init__(self, job: Job):
        self.job_id, self.redundancy = job.id, job.redundancy_min
        self.now = clock.now()
        self.rows = self.created = self.unchanged = 0
        self.read_errors, self.write_errors = _ErrorLog(), _ErrorLog()
        self.batch: list[tuple[int, tuple, bool]] = []  # (row, values, look it up?)
        self.batch_rows: dict[str, int] = {}  # external_id → row, within the pending batch
        # A job that holds no external_id yet (imports take turns, so none can arrive) can
        # only clash with this upload itself: rows are looked up only when a filter of the
        # upload's external_ids says they may have been seen. That saves a look-up for
        # almost every row of a first import.
        has_external_ids = db.session.scalar(
            select(Task.id).where(Task.job_id == job.id, Task.external_id.is_not(None)).limit(1)
        )
        self.seen = None if has_external_ids else _SeenFilter()
        self.postgresql = db.session.get_bind().dialect.name == "postgresql"
        self.copy: Any = None  # the open COPY (PostgreSQL), between batches too
        if self.postgresql:
            self.connection = db.session.connection().connection.driver_connection
            # What every row of a kind ends with, in COPY's text format (see _COLUMNS).
            shared = f"\t{job.id}\t{_OPEN}\t0\t0\t{self.now.isoformat()}\n"
            self.real_tail = f"\tf\t{self.redundancy}{shared}".encode()
            self.gold_tail = f"\tt\t{GOLD_REDUNDANCY}{shared}".encode()
        else:
            # SQLite: this transaction is the only writer, so the tasks it wrote are those
            # past the largest id now (PostgreSQL tells by xmin instead; see _LOOKUP).
            self.first_id = db.session.scalar(select(func.max(Task.id))) or 0

    def take(self, row: int, record: Any, values: tuple | None, errors: Errors | None) -> None:
        self.rows += 1
        external_id = record.get("external_id") if isinstance(record, dict) else None
        if values is None:
            self.read_errors.add(row, errors or {}, external_id)
            return
        look_up = external_id is not None
        if look_up:
            first = self.batch_rows.get(external_id)
            if first is not None:
                self.read_errors.add(row, _duplicate(external_id, f"row {first}"), external_id)
                return
            self.batch_rows[external_id] = row
            if self.seen is not None:
                look_up = self.seen.add(external_id)
        self.batch.append((row, values, look_up))
        if len(self.batch) >= BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            batch, self.batch, self.batch_rows = self.batch, [], {}
            self._write(batch)

    def outcome(self) -> dict[str, Any]:
        entries = self.read_errors.entries + self.write_errors.entries
        return {
            "created": self.created,
            "unchanged": self.unchanged,
            "error_count": self.read_errors.count + self.write_errors.count,
            # Each log holds its first errors in row order, so the merge's first are the first.
            "errors": sorted(entries, key=lambda entry: entry["row"])[:MAX_REPORTED_ERRORS],
        }

    def end_copy(self, error: BaseException | None = None) -> None:
        """Finish the open COPY (or, after `error`, abandon it) and free the connection."""
        if self.copy is not None:
            copy, self.copy = self.copy, None
            manager, cursor = copy
            try:
                if error is None:
                    manager.__exit__(None, None, None)
                else:
                    manager.__exit__(type(error), error, error.__traceback__)
            finally:
                cursor.close()

    def _write(self, batch: list[tuple[int, tuple, bool]]) -> None:
        """Compare the batch's external_ids with the job's tasks, then write the new rows."""
        wanted = sorted(values[0] for _, values, look_up in batch if look_up)
        if wanted:
            self.end_copy()  # a look-up needs the connection, and sees every row sent so far
        existing = self._existing(wanted)
        new = []
        for row, values, look_up in batch:
            external_id = values[0]
            task = existing.get(external_id) if look_up else None
            if task is None:
                new.append(values)
            elif task[0]:  # written by this import
                self.write_errors.add(row, _duplicate(external_id, "an earlier row"), external_id)
            elif task[2:] == values[1:]:
                self.unchanged += 1
            else:
                message = f"external_id {external_id} exists with different content."
                self.write_errors.add(row, {"external_id": [message]}, external_id)
        if new:
            self._copy(new) if self.postgresql else self._insert(new)
            self.created += len(new)

    def _existing(self, external_ids: list[str]) -> dict[str, tuple]:
        """The job's tasks with these external_ids, by external_id: (written by this import,
        external_id, *content)."""
        if not external_ids:
            return {}
        if self.postgresql:
            params = {"job_id": self.job_id, "external_ids": external_ids, "now": self.now}
            with self.connection.cursor() as cursor:
                rows = cursor.execute(_LOOKUP, params).fetchall()
        else:
            rows = db.session.execute(
                select(Task.id > self.first_id, *_CONTENT).where(
                    Task.job_id == self.job_id, Task.external_id.in_(external_ids)
                )
            ).all()
        return {row[1]: tuple(row) for row in rows}

    def _insert(self, rows: list[tuple]) -> None:
        params = []
        for external_id, payload, gold, prelabel, confidence, priority in rows:
            is_gold = gold is not None
            target = GOLD_REDUNDANCY if is_gold else self.redundancy
            values = (external_id, payload, _sql_json(gold), _sql_json(prelabel), confidence,
                      priority, is_gold, target, self.job_id, _OPEN, 0, 0, self.now)  # fmt: skip
            params.append(dict(zip(_COLUMNS, values, strict=True)))
        db.session.execute(insert(_TASKS), params)

    def _copy(self, rows: list[tuple]) -> None:
        """PostgreSQL: each row as a line of COPY's text format, into the open COPY (opened
        if none is). This loop runs for every row of every import: hence the local names."""
        if self.copy is None:
            cursor = self.connection.cursor()
            try:
                manager = cursor.copy(_COPY)
                self.copy_write = manager.__enter__().write
            except BaseException:
                cursor.close()
                raise
            self.copy = (manager, cursor)
        real_tail, gold_tail, json_field, text_field = (
            self.real_tail, self.gold_tail, _copy_json, _copy_text
        )  # fmt: skip
        lines = []
        for external_id, payload, gold, prelabel, confidence, priority in rows:
            lines.append(
                b"\t".join((
                    b"\\N" if external_id is None else text_field(external_id),
                    json_field(payload),
                    b"\\N" if gold is None else json_field(gold),
                    b"\\N" if prelabel is None else json_field(prelabel),
                    b"\\N" if confidence is None else repr(confidence).encode(),
                    str(priority).encode(),
                ))
                + (real_tail if gold is None else gold_tail)
            )  # fmt: skip
        self.copy_write(b"".join(lines))


class _SeenFilter:
    """The external_ids of one upload, as a Bloom filter (16 MiB, four probes): never wrong
    about a new one; wrong about a repeat for about 1 row in a million of a million, 1 in
    230 of ten million. A wrong "seen" only costs a look-up (and the open COPY)."""

    BITS = 1 << 27
    MASK = BITS - 1

    def __init__(self):
        self.bits = bytearray(self.BITS // 8)

    def add(self, key: str) -> bool:
        """Remember `key`; whether it may have been added before."""
        # four probes h1 + i·h2 from the two halves of the 64-bit hash (the step made odd),
        # written out: this runs for every row of a first import
        digest, mask, bits = hash(key), self.MASK, self.bits
        step = (digest >> 32) | 1
        a, b = digest & mask, (digest + step) & mask
        c, d = (digest + 2 * step) & mask, (digest + 3 * step) & mask
        seen = (
            bits[a >> 3] >> (a & 7) & bits[b >> 3] >> (b & 7)
            & bits[c >> 3] >> (c & 7) & bits[d >> 3] >> (d & 7) & 1
        )  # fmt: skip
        if not seen:
            bits[a >> 3] |= 1 << (a & 7)
            bits[b >> 3] |= 1 << (b & 7)
            bits[c >> 3] |= 1 << (c & 7)
            bits[d >> 3] |= 1 << (d & 7)
        return bool(seen)


def _sql_json(value: Any) -> Any:
    # SQL NULL, as the ORM stores an unset JSON column (a bare None would be stored as JSON null)
    return null() if value is None else value


def _duplicate(external_id: str, first: str) -> Errors:
    return {"external_id": [f"external_id {external_id} appears more than once ({first})."]}

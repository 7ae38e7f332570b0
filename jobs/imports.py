"""Bulk task import: JSON Lines or CSV, read as a stream and written in batches.

Rows are validated one at a time and written a few thousand at a time, so a body of a
million rows never sits in memory. Before a batch is written its external_ids are looked up
in the job: the same content counts as `unchanged` (re-importing a file is harmless),
different content is a row error, and so is an external_id twice in one upload.

Imports into one job take turns (a PostgreSQL advisory lock; SQLite has one writer anyway),
so that look-up cannot race another import of the same file, and new rows can go in with
`COPY` on PostgreSQL, about twice the rate of a batched INSERT there. The (job_id,
external_id) unique constraint stays the last word: should anything else slip a row in, the
import is refused with 409 and may simply be retried.

The whole import is one transaction: by default any row error rolls it all back (422 with
the row errors); with `partial` the valid rows are kept and the errors reported.

Reading and checking the rows is jobs.import_rows.
"""

from __future__ import annotations

import bisect
import json
from array import array
from collections.abc import Callable
from typing import IO, Any

from sqlalchemy import func, insert, null, select
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
_COLUMNS = (
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
# id, external_id, then what must match for a re-imported row to count as unchanged
_LOOKUP_COLUMNS = (
    Task.id,
    Task.external_id,
    Task.payload,
    Task.gold_answer,
    Task.prelabel,
    Task.prelabel_confidence,
    Task.priority,
)
_LOOKUP = (
    f"SELECT {', '.join(c.name for c in _LOOKUP_COLUMNS)} FROM {_TASKS.name} "
    "WHERE job_id = %s AND external_id = ANY(%s)"
)
_NEXT_IDS = (
    f"SELECT nextval(pg_get_serial_sequence('{_TASKS.name}', 'id')) FROM generate_series(1, %s)"
)
_COPY = f"COPY {_TASKS.name} (id, {', '.join(_COLUMNS)}) FROM STDIN"


def import_tasks(job_id: int, body: IO[bytes], media_type: str, *, partial: bool) -> dict:
    """Import a stream of tasks into a job; all or nothing unless `partial`."""
    job = get_job(job_id)
    if db.session.get_bind().dialect.name == "postgresql":
        # Imports into one job take turns (see the module docstring).
        db.session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(f"task_import:{job.id}", 0)))
        )
    # KEY SHARE: lifecycle changes (cancel, activate, fund) wait for the import to finish,
    # while leasing and submitting, which update the job row without a lock, do not.
    db.session.execute(
        select(Job.id).where(Job.id == job.id).with_for_update(read=True, key_share=True)
    )
    db.session.refresh(job)
    if job.status not in IMPORTABLE:
        raise Conflict(f"Tasks cannot be added to a {job.status.value} job.")
    is_csv = media_type == CSV
    run = _TaskImport(job)
    read = import_rows.csv_records if is_csv else import_rows.ndjson_records
    try:
        for row, record, values, errors in read(body, job.answer_spec):
            run.take(row, record, values, errors)
        run.flush()
    except IntegrityError as error:
        raise Conflict(
            "Another write added some of these external_ids while the import ran; send the "
            "file again (rows already there will count as unchanged)."
        ) from error
    outcome = run.outcome()
    if run.error_count and not partial:
        raise ValidationFailed(
            f"{run.error_count} of {run.rows} rows have errors, so nothing was imported; fix "
            "them, or send ?partial=true to import the valid rows.",
            errors=outcome["errors"],
            created=0,
            unchanged=0,
            error_count=run.error_count,
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
            "created": run.created,
            "unchanged": run.unchanged,
            "error_count": run.error_count,
        },
    )
    db.session.commit()
    return outcome


class _TaskImport:
    """The running state of one import: the pending batch, counts, errors, inserted ids."""

    def __init__(self, job: Job):
        self.job = job
        self.now = clock.now()
        self.rows = self.created = self.unchanged = self.error_count = 0
        self.errors: list[dict[str, Any]] = []
        self.batch: list[tuple[int, tuple]] = []  # (row, values)
        self.batch_rows: dict[str, int] = {}  # external_id → row, within the pending batch
        # Ids this import inserted, ascending, to tell a duplicate within the upload from a
        # task that was already there: 8 bytes a row rather than the rows themselves.
        self.inserted_ids = array("q")
        self.postgresql = db.session.get_bind().dialect.name == "postgresql"

    def take(self, row: int, record: Any, values: tuple | None, errors: Errors | None) -> None:
        self.rows += 1
        if values is None:
            self.fail(row, errors or {}, record)
            return
        external_id = values[0]
        if external_id is not None:
            first = self.batch_rows.get(external_id)
            if first is not None:
                self.fail(row, _duplicate(external_id, f"row {first}"), record)
                return
            self.batch_rows[external_id] = row
        self.batch.append((row, values))
        if len(self.batch) >= BATCH_SIZE:
            self.flush()

    def fail(self, row: int, errors: Errors, record: Any = None) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            entry: dict[str, Any] = {"row": row, "errors": errors}
            external_id = record.get("external_id") if isinstance(record, dict) else None
            if isinstance(external_id, str) and not import_rows.unstorable(external_id):
                entry["external_id"] = external_id[: import_rows.MAX_EXTERNAL_ID]
            self.errors.append(entry)

    def flush(self) -> None:
        """Compare the batch's external_ids with the job's tasks, then write the new rows."""
        if not self.batch:
            return
        batch, self.batch, self.batch_rows = self.batch, [], {}
        existing = self._existing([values[0] for _, values in batch if values[0] is not None])
        new = []
        for row, values in batch:
            task = existing.get(values[0]) if values[0] is not None else None
            if task is None:
                new.append(values)
            elif self._inserted_here(task[0]):
                self.fail(row, _duplicate(values[0], "an earlier row"), {"external_id": values[0]})
            elif task[2:] == values[1:]:
                self.unchanged += 1
            else:
                message = f"external_id {values[0]} exists with different content."
                self.fail(row, {"external_id": [message]}, {"external_id": values[0]})
        if not new:
            return
        ids = sorted(self._copy(new) if self.postgresql else self._insert(new))
        self.created += len(ids)
        if self.inserted_ids and ids[0] <= self.inserted_ids[-1]:  # ids only grow; be sure
            ids = sorted([*self.inserted_ids, *ids])
            self.inserted_ids = array("q")
        self.inserted_ids.extend(ids)

    def _existing(self, external_ids: list[str]) -> dict[str, tuple]:
        """The job's tasks with these external_ids: (id, external_id, *content) by external_id."""
        if not external_ids:
            return {}
        if self.postgresql:
            # Planned afresh each time (no prepared, generic plan): the table grows under the
            # import, and a plan made while it was small would scan the job's tasks per batch.
            with db.session.connection().connection.cursor() as cursor:
                cursor.execute(_LOOKUP, (self.job.id, external_ids), prepare=False)
                rows = cursor.fetchall()
        else:
            rows = db.session.execute(
                select(*_LOOKUP_COLUMNS).where(
                    Task.job_id == self.job.id, Task.external_id.in_(external_ids)
                )
            ).all()
        return {row[1]: tuple(row) for row in rows}

    def _row(self, values: tuple, json_value: Callable[[Any], Any]) -> tuple:
        """A new task's column values, in _COLUMNS order."""
        external_id, payload, gold, prelabel, confidence, priority = values
        is_gold = gold is not None
        target = GOLD_REDUNDANCY if is_gold else self.job.redundancy_min
        return (self.job.id, external_id, json_value(payload), is_gold, json_value(gold),
                json_value(prelabel), confidence, TaskStatus.OPEN.value, priority, target, 0, 0,
                self.now)  # fmt: skip

    def _insert(self, rows: list[tuple]) -> list[int]:
        params = [dict(zip(_COLUMNS, self._row(values, _sql_json), strict=True)) for values in rows]
        return list(db.session.scalars(insert(_TASKS).returning(_TASKS.c.id), params))

    def _copy(self, rows: list[tuple]) -> list[int]:
        """PostgreSQL: COPY, the fastest way in; ids are drawn first so the import knows them."""
        with db.session.connection().connection.cursor() as cursor:
            cursor.execute(_NEXT_IDS, (len(rows),))
            ids = [task_id for (task_id,) in cursor.fetchall()]
            with cursor.copy(_COPY) as copy:
                for task_id, values in zip(ids, rows, strict=True):
                    copy.write_row((task_id, *self._row(values, _json_text)))
        return ids

    def _inserted_here(self, task_id: int) -> bool:
        at = bisect.bisect_left(self.inserted_ids, task_id)
        return at < len(self.inserted_ids) and self.inserted_ids[at] == task_id

    def outcome(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "unchanged": self.unchanged,
            "error_count": self.error_count,
            "errors": self.errors,
        }


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _sql_json(value: Any) -> Any:
    # SQL NULL, as the ORM stores an unset JSON column (a bare None would be stored as JSON null)
    return null() if value is None else value


def _duplicate(external_id: str, first: str) -> Errors:
    return {"external_id": [f"external_id {external_id} appears more than once ({first})."]}

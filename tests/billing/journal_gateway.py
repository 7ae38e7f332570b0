"""A payment processor that outlives the payout process, for the SIGKILL tests.

`JournalGateway` keeps the processor's side in its own SQLite file: one row per transfer,
keyed by idempotency key (a repeated key replays the first transfer, as Stripe does), plus
a log of every call. Each write is committed before the call returns, so a payout process
killed at any instant leaves the processor's records exactly as Stripe would have them.
`delay_before` and `delay_after` slow each transfer down around the moment it is recorded,
so a test can kill the payout run while it waits for an answer that the processor has
already acted on.

`create_app` is a Flask app factory for the subprocess: the ordinary app, with this gateway
installed from CROWDLINE_TEST_JOURNAL, CROWDLINE_TEST_DELAY_BEFORE and
CROWDLINE_TEST_DELAY_AFTER. Run it as
`flask --app tests.billing.journal_gateway:create_app crowdline payouts run`.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time

from billing.gateway import ConnectedAccount, OfflineGateway, ProcessorRecords, TransferResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS transfers (
    idempotency_key TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    destination TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL,
    pid INTEGER NOT NULL
);
"""


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.execute("PRAGMA synchronous = FULL")
    connection.executescript(SCHEMA)
    return connection


class JournalGateway(OfflineGateway):
    """Transfers recorded in a SQLite journal, idempotent by key; the rest is offline."""

    name = "journal"
    keeps_records = True

    def __init__(self, path: str, delay_before: float = 0.0, delay_after: float = 0.0):
        super().__init__()
        self.path = path
        self.delay_before = delay_before
        self.delay_after = delay_after
        _connect(path).close()

    def create_connected_account(self, email, country, idempotency_key):
        return ConnectedAccount(id="acct_journal_" + secrets.token_hex(8), payouts_enabled=True)

    def create_transfer(self, amount, currency, destination, idempotency_key):
        time.sleep(self.delay_before)
        connection = _connect(self.path)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "INSERT INTO calls (idempotency_key, pid) VALUES (?, ?)",
                (idempotency_key, os.getpid()),
            )
            connection.execute(
                "INSERT OR IGNORE INTO transfers VALUES (?, ?, ?, ?, ?)",
                (
                    idempotency_key,
                    "tr_journal_" + secrets.token_hex(10),
                    amount,
                    currency.upper(),
                    destination,
                ),
            )
            connection.execute("COMMIT")
            row = connection.execute(
                "SELECT id, amount, currency, destination FROM transfers WHERE idempotency_key = ?",
                (idempotency_key,),
            ).fetchone()
        finally:
            connection.close()
        time.sleep(self.delay_after)  # the processor acted; the answer is still on its way
        return TransferResult(id=row[0], amount=row[1], currency=row[2], destination=row[3])

    def find_transfer(self, idempotency_key):
        connection = _connect(self.path)
        try:
            row = connection.execute(
                "SELECT id, amount, currency, destination FROM transfers WHERE idempotency_key = ?",
                (idempotency_key,),
            ).fetchone()
        finally:
            connection.close()
        if row is None:
            return None
        return TransferResult(id=row[0], amount=row[1], currency=row[2], destination=row[3])

    def records(self):
        found = ProcessorRecords()
        for transfer_id, amount, currency in transfers(self.path):
            found.transfers[transfer_id] = amount
            found.currencies[transfer_id] = currency
        return found


def transfers(path: str) -> list[tuple[str, int, str]]:
    connection = _connect(path)
    try:
        return connection.execute("SELECT id, amount, currency FROM transfers").fetchall()
    finally:
        connection.close()


def transfers_by_key(path: str) -> dict[str, int]:
    """Idempotency key → how many transfers the processor made for it."""
    connection = _connect(path)
    try:
        return dict(
            connection.execute(
                "SELECT idempotency_key, count(*) FROM transfers GROUP BY idempotency_key"
            ).fetchall()
        )
    finally:
        connection.close()


def calls_by_key(path: str) -> dict[str, int]:
    """Idempotency key → how many times a payout process asked for it."""
    connection = _connect(path)
    try:
        return dict(
            connection.execute(
                "SELECT idempotency_key, count(*) FROM calls GROUP BY idempotency_key"
            ).fetchall()
        )
    finally:
        connection.close()


def create_app():
    from billing.gateway import install
    from marketplace import create_app as build

    app = build()
    install(
        app,
        JournalGateway(
            os.environ["CROWDLINE_TEST_JOURNAL"],
            delay_before=float(os.environ.get("CROWDLINE_TEST_DELAY_BEFORE", "0")),
            delay_after=float(os.environ.get("CROWDLINE_TEST_DELAY_AFTER", "0")),
        ),
    )
    return app

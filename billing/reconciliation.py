"""Reconciliation: the ledger checked against itself and against the payment processor, and
the revenue report for platform admins.

Checks, each producing findings (an empty list means the books are right):

- transactions: every ledger transaction's entries sum to zero in a single currency, and no
  transaction is empty;
- accounts: every account's cached balance equals the sum of its entries, and no account
  that holds someone's money is below zero;
- the processor (only with a gateway whose records outlive the process, i.e. Stripe):
  every succeeded PaymentIntent has exactly one `funding` transaction (reference = its id)
  of the same amount and currency, and every funding transaction has such a PaymentIntent;
  the same between transfers and `payout_paid` transactions, whole reversals of transfers
  and `payout_reversed` transactions (reference `reversal:<transfer id>`), and refunds and
  `refund` transactions;
- webhook events that have waited longer than billing.webhooks.STALE_AFTER.

The processor is read before the ledger, and ledger transactions newer than that snapshot
are left out of the ledger → processor direction, so money moving during a run is not
reported as missing. The other direction can show a payment whose webhook is still on its
way; a second run a few minutes later tells the two apart.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select

from billing import webhooks
from billing.gateway import GatewayError, ProcessorRecords, gateway
from billing.ledger import NON_NEGATIVE
from billing.models import LedgerAccount, LedgerEntry, LedgerTransaction, OwnerType, Purpose
from marketplace import clock
from marketplace.database import db

# Ledger kinds tied one-to-one to processor objects (see billing.services, billing.payouts).
FUNDING = "funding"
REFUND = "refund"
PAYOUT_PAID = "payout_paid"
PAYOUT_REVERSED = "payout_reversed"
REVERSAL_PREFIX = "reversal:"


@dataclass
class Finding:
    check: str  # transaction | account | payment_intent | funding | transfer | payout | …
    subject: str
    detail: str


@dataclass
class Report:
    checked_at: datetime
    gateway: str
    processor_compared: bool
    processor_note: str
    counts: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked_at": self.checked_at.isoformat(),
            "gateway": self.gateway,
            "processor_compared": self.processor_compared,
            "processor_note": self.processor_note,
            "counts": self.counts,
            "findings": [asdict(f) for f in self.findings],
        }


def reconcile(*, processor: bool = True) -> Report:
    """Run every check (the processor's unless `processor` is False) and report findings."""
    started = clock.now()
    chosen = gateway()
    report = Report(started, chosen.name, False, "not compared (asked to skip)")
    records = None
    if processor and not getattr(chosen, "keeps_records", False):
        report.processor_note = (
            f"not compared: the {chosen.name} gateway keeps no records beyond this process"
        )
    elif processor:
        try:
            records = chosen.records()
        except GatewayError as error:
            report.processor_note = f"unreachable: {error}"
            report.findings.append(Finding("processor", chosen.name, f"unreachable: {error}"))
        else:
            report.processor_compared = True
            report.processor_note = "compared"
    report.findings += check_transactions(report.counts)
    report.findings += check_accounts(report.counts)
    if records is not None:
        report.findings += compare_with_processor(records, started, report.counts)
    report.findings += check_waiting_events(report.counts)
    db.session.rollback()  # read-only: end the transaction
    return report


# --- the ledger against itself -------------------------------------------------------------


def check_transactions(counts: dict[str, int]) -> list[Finding]:
    findings = []
    counts["transactions"] = db.session.scalar(select(func.count(LedgerTransaction.id)))
    counts["entries"] = db.session.scalar(select(func.count(LedgerEntry.id)))
    per_transaction = db.session.execute(
        select(
            LedgerEntry.transaction_id,
            func.sum(LedgerEntry.amount),
            func.count(func.distinct(LedgerEntry.currency)),
        )
        .group_by(LedgerEntry.transaction_id)
        .having(
            (func.sum(LedgerEntry.amount) != 0)
            | (func.count(func.distinct(LedgerEntry.currency)) > 1)
        )
        .order_by(LedgerEntry.transaction_id)
    ).all()
    for transaction_id, total, currencies in per_transaction:
        if total != 0:
            findings.append(
                Finding("transaction", f"transaction {transaction_id}", f"entries sum to {total}")
            )
        if currencies > 1:
            findings.append(
                Finding("transaction", f"transaction {transaction_id}", "entries mix currencies")
            )
    empty = db.session.scalars(
        select(LedgerTransaction.id)
        .where(
            ~select(LedgerEntry.id)
            .where(LedgerEntry.transaction_id == LedgerTransaction.id)
            .exists()
        )
        .order_by(LedgerTransaction.id)
    )
    findings += [Finding("transaction", f"transaction {i}", "has no entries") for i in empty]
    return findings


def _describe(account: LedgerAccount) -> str:
    owner = account.owner_type.value if account.owner_type else "?"
    return (
        f"account {account.id} ({owner} {account.owner_id} "
        f"{account.purpose.value} {account.currency})"
    )


def check_accounts(counts: dict[str, int]) -> list[Finding]:
    findings = []
    sums = (
        select(LedgerEntry.account_id, func.sum(LedgerEntry.amount).label("total"))
        .group_by(LedgerEntry.account_id)
        .subquery()
    )
    rows = db.session.execute(
        select(LedgerAccount, func.coalesce(sums.c.total, 0))
        .outerjoin(sums, sums.c.account_id == LedgerAccount.id)
        .order_by(LedgerAccount.id)
    ).all()
    counts["accounts"] = len(rows)
    for account, total in rows:
        if account.balance != total:
            findings.append(
                Finding(
                    "account",
                    _describe(account),
                    f"cached balance {account.balance}, but its entries sum to {total}",
                )
            )
        if account.purpose in NON_NEGATIVE and total < 0:
            findings.append(Finding("account", _describe(account), f"below zero: {total}"))
    return findings


# --- the ledger against the processor -------------------------------------------------------


@dataclass
class _Posted:
    id: int
    reference: str | None
    amount: int
    currency: str
    created_at: datetime


def _posted(kind: str) -> list[_Posted]:
    """Transactions of one kind with the amount they moved (the sum of their credits)."""
    rows = db.session.execute(
        select(
            LedgerTransaction.id,
            LedgerTransaction.reference,
            func.sum(case((LedgerEntry.amount > 0, LedgerEntry.amount), else_=0)),
            func.min(LedgerEntry.currency),
            LedgerTransaction.created_at,
        )
        .join(LedgerEntry, LedgerEntry.transaction_id == LedgerTransaction.id)
        .where(LedgerTransaction.kind == kind)
        .group_by(LedgerTransaction.id)
        .order_by(LedgerTransaction.id)
    ).all()
    return [_Posted(*row) for row in rows]


def _match(
    *,
    check: str,
    what: str,
    kind: str,
    at_processor: dict[str, int],
    records: ProcessorRecords,
    started: datetime,
    reference: Any = lambda object_id: object_id,
) -> list[Finding]:
    """Each processor object ↔ exactly one transaction of `kind` with the same amount."""
    findings = []
    posted = _posted(kind)
    by_reference: dict[str | None, list[_Posted]] = defaultdict(list)
    for txn in posted:
        by_reference[txn.reference].append(txn)
    expected = {reference(object_id): object_id for object_id in at_processor}
    for ref, object_id in expected.items():
        amount = at_processor[object_id]
        currency = records.currencies.get(object_id, "")
        found = by_reference.get(ref, [])
        if not found:
            findings.append(
                Finding(
                    check,
                    object_id,
                    f"{what} of {amount} {currency} at the processor has no {kind} transaction",
                )
            )
            continue
        if len(found) > 1:
            ids = ", ".join(str(t.id) for t in found)
            findings.append(Finding(check, object_id, f"{len(found)} {kind} transactions: {ids}"))
        for txn in found:
            if txn.amount != amount or (currency and txn.currency != currency):
                findings.append(
                    Finding(
                        check,
                        object_id,
                        f"{what} of {amount} {currency} at the processor, but {kind} "
                        f"transaction {txn.id} moved {txn.amount} {txn.currency}",
                    )
                )
    for txn in posted:
        if txn.reference not in expected and txn.created_at <= started:
            findings.append(
                Finding(
                    kind,
                    f"transaction {txn.id}",
                    f"{kind} of {txn.amount} {txn.currency} refers to {txn.reference}, "
                    f"which is not a {what} at the processor",
                )
            )
    return findings


def compare_with_processor(
    records: ProcessorRecords, started: datetime, counts: dict[str, int]
) -> list[Finding]:
    counts["processor_payment_intents"] = len(records.succeeded_payment_intents)
    counts["processor_refunds"] = len(records.refunds)
    counts["processor_transfers"] = len(records.transfers)
    counts["processor_transfers_reversed"] = len(records.transfers_reversed)
    common = {"records": records, "started": started}
    return (
        _match(
            check="payment_intent",
            what="succeeded PaymentIntent",
            kind=FUNDING,
            at_processor=records.succeeded_payment_intents,
            **common,
        )
        + _match(check="refund", what="refund", kind=REFUND, at_processor=records.refunds, **common)
        + _match(
            check="transfer",
            what="transfer",
            kind=PAYOUT_PAID,
            at_processor=records.transfers,
            **common,
        )
        + _match(
            check="transfer",
            what="transfer reversal",
            kind=PAYOUT_REVERSED,
            at_processor=records.transfers_reversed,
            reference=lambda transfer_id: REVERSAL_PREFIX + transfer_id,
            **common,
        )
    )


def check_waiting_events(counts: dict[str, int]) -> list[Finding]:
    stale = webhooks.waiting_events()
    counts["events_waiting"] = len(stale)
    return [
        Finding(
            "event",
            f"{event.id} ({event.type})",
            f"received {event.received_at.isoformat()}, not applied: "
            f"{event.outcome or 'never tried'}",
        )
        for event in stale
    ]


def format_report(report: Report) -> str:
    """The report as text for a terminal."""
    counts = report.counts
    lines = [
        f"Crowdline reconciliation at {report.checked_at.isoformat()} (gateway: {report.gateway})",
        f"  ledger: {counts.get('transactions', 0)} transactions, "
        f"{counts.get('entries', 0)} entries, {counts.get('accounts', 0)} accounts",
    ]
    if report.processor_compared:
        lines.append(
            f"  processor: {counts['processor_payment_intents']} succeeded PaymentIntents, "
            f"{counts['processor_refunds']} refunds, {counts['processor_transfers']} transfers "
            f"({counts['processor_transfers_reversed']} reversed)"
        )
    else:
        lines.append(f"  processor: {report.processor_note}")
    lines.append(f"  webhook events waiting too long: {counts.get('events_waiting', 0)}")
    if report.ok:
        lines.append("OK: no discrepancies.")
        return "\n".join(lines)
    lines.append(f"{len(report.findings)} discrepanc{'y' if len(report.findings) == 1 else 'ies'}:")
    lines += [f"  [{f.check}] {f.subject}: {f.detail}" for f in report.findings]
    return "\n".join(lines)


# --- revenue -------------------------------------------------------------------------------


def platform_revenue() -> dict[str, Any]:
    """The platform's fee balance per currency and every vendor's margin balance."""
    from marketplace.accounts.models import Organization

    fees = db.session.execute(
        select(LedgerAccount.currency, LedgerAccount.balance)
        .where(
            LedgerAccount.owner_type == OwnerType.PLATFORM,
            LedgerAccount.purpose == Purpose.FEES,
        )
        .order_by(LedgerAccount.currency)
    ).all()
    margins = db.session.execute(
        select(
            LedgerAccount.owner_id, Organization.name, LedgerAccount.currency, LedgerAccount.balance
        )
        .outerjoin(Organization, Organization.id == LedgerAccount.owner_id)
        .where(
            LedgerAccount.owner_type == OwnerType.ORGANIZATION,
            LedgerAccount.purpose == Purpose.MARGIN,
        )
        .order_by(LedgerAccount.currency, LedgerAccount.balance.desc(), LedgerAccount.owner_id)
    ).all()
    totals: dict[str, int] = defaultdict(int)
    for _org, _name, currency, balance in margins:
        totals[currency] += balance
    db.session.rollback()
    return {
        "platform_fees": [{"amount": b, "currency": c} for c, b in fees],
        "vendor_margins": [
            {"organization_id": org, "organization": name, "amount": b, "currency": c}
            for org, name, c, b in margins
        ],
        "vendor_margin_totals": [{"amount": b, "currency": c} for c, b in sorted(totals.items())],
    }

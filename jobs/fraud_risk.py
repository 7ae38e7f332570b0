"""Risk scores from fraud signals, automatic escalation, and what an action means to leasing.

risk = 1 − ∏(1 − w) over the kinds of a worker's signals (each kind by its strongest
signal), each counted only for the evidence a reviewer has not seen yet. Escalation is
automatic up to `restrict`; `suspend` happens automatically only on very strong evidence
(a high score carried by at least two independent strong signals); a ban always needs a
reviewer (jobs.fraud_actions).
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import ScalarSelect, and_, or_, select
from sqlalchemy.exc import IntegrityError

from billing import services as billing
from jobs.fraud_models import (
    ACTION_RANK,
    CaseStatus,
    FraudAction,
    FraudCase,
    FraudSignal,
    SignalKind,
)
from marketplace import audit, clock
from marketplace.database import db
from workers.models import WorkerProfile, WorkerStatus

FLAG_AT = 0.3
RESTRICT_AT = 0.6
SUSPEND_AT = 0.9
STRONG_WEIGHT = 0.5  # a signal this strong counts towards an automatic suspension
STRONG_SIGNALS_TO_SUSPEND = 2
RESTRICTED_GOLD_RATE = 0.9
MAX_WEIGHT = 0.95
LOOK_IT_UP = object()  # record_signal looks the signal up itself


def action_column(worker_id: int) -> ScalarSelect:
    """The worker's fraud action (None without a case), to select with other columns."""
    return select(FraudCase.action).where(FraudCase.worker_id == worker_id).scalar_subquery()


def restricted_gold_rate(action: FraudAction | str | None) -> float | None:
    """The share of gold tasks a worker under `action` is leased (None when not restricted)."""
    return RESTRICTED_GOLD_RATE if action == FraudAction.RESTRICT else None


def record_signal(
    worker_id: int,
    kind: SignalKind,
    key: str,
    weight: float,
    evidence: dict[str, Any],
    job_id: int | None = None,
    *,
    found: FraudSignal | None | object = LOOK_IT_UP,
) -> bool:
    """Create or refresh a worker's signal; True when it appeared, went or changed weight
    (what the risk score depends on; fresher evidence alone is written but returns False).
    `found` is the signal row (or None) when the caller has just looked it up itself.

    Runs in the caller's transaction (the submit's, or a scan's); never commits."""
    weight = round(min(max(weight, 0.0), MAX_WEIGHT), 4)
    now = clock.now()
    signal = (
        db.session.scalar(
            select(FraudSignal).where(FraudSignal.worker_id == worker_id, FraudSignal.key == key)
        )
        if found is LOOK_IT_UP
        else found
    )
    if signal is None:
        if weight <= 0:
            return False
        try:
            with db.session.begin_nested():
                db.session.add(
                    FraudSignal(
                        worker_id=worker_id,
                        job_id=job_id,
                        kind=kind,
                        key=key,
                        weight=weight,
                        reviewed_weight=0.0,
                        evidence=evidence,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:  # a concurrent submit of the same worker created it first
            signal = db.session.scalar(
                select(FraudSignal).where(
                    FraudSignal.worker_id == worker_id, FraudSignal.key == key
                )
            )
            if signal is None:
                return False
        else:
            return True
    if weight <= 0:  # the pattern faded (e.g. gold passed since): no signal to keep
        db.session.delete(signal)
        return True
    if signal.weight == weight and signal.evidence == evidence:
        return False
    weight_changed = signal.weight != weight
    signal.weight = weight
    signal.evidence = evidence
    signal.updated_at = now
    return weight_changed


def signals_of(worker_ids: list[int]) -> dict[int, list[FraudSignal]]:
    found: dict[int, list[FraudSignal]] = {w: [] for w in worker_ids}
    if not worker_ids:
        return found
    rows = db.session.scalars(
        select(FraudSignal)
        .where(FraudSignal.worker_id.in_(worker_ids))
        .order_by(FraudSignal.worker_id, FraudSignal.weight.desc(), FraudSignal.id)
    )
    for signal in rows:
        found[signal.worker_id].append(signal)
    return found


def risk_score(signals: list[FraudSignal]) -> float:
    """1 − ∏(1 − w) over the kinds of evidence not yet reviewed, each kind counted by its
    strongest signal: ten partners in one collusion ring, or one worker too fast in ten
    jobs, are one finding seen ten times, not ten independent ones."""
    strongest: dict[str, float] = {}
    for signal in signals:
        strongest[signal.kind] = max(strongest.get(signal.kind, 0.0), signal.effective_weight)
    remaining = math.prod(1.0 - weight for weight in strongest.values())
    return round(1.0 - remaining, 4)


def _target_action(signals: list[FraudSignal]) -> FraudAction:
    score = risk_score(signals)
    strong = {s.kind for s in signals if s.effective_weight >= STRONG_WEIGHT}
    if score >= SUSPEND_AT and len(strong) >= STRONG_SIGNALS_TO_SUSPEND:
        return FraudAction.SUSPEND
    if score >= RESTRICT_AT:
        return FraudAction.RESTRICT
    if score >= FLAG_AT:
        return FraudAction.FLAG
    return FraudAction.NONE


def set_worker_status(
    case: FraudCase, worker: WorkerProfile, to: WorkerStatus, reason: str
) -> None:
    """Suspend or ban for fraud, remembering the status to restore if the action is lifted."""
    if worker.status == to:
        return
    if worker.status not in (WorkerStatus.SUSPENDED, WorkerStatus.BANNED):
        case.status_before = worker.status.value
    _change_status(worker, to, reason)


def reinstate(case: FraudCase, worker: WorkerProfile, reason: str) -> None:
    """Give back the status a fraud suspension or ban replaced (if this case replaced one)."""
    if case.status_before and worker.status in (WorkerStatus.SUSPENDED, WorkerStatus.BANNED):
        _change_status(worker, WorkerStatus(case.status_before), reason)
    case.status_before = None


def _change_status(worker: WorkerProfile, to: WorkerStatus, reason: str) -> None:
    before = worker.status
    worker.status = to
    worker.status_reason = reason
    worker.status_changed_at = clock.now()
    audit.record(
        "worker.status_changed",
        "worker",
        worker.id,
        detail={"from": before.value, "to": to.value, "reason": reason},
    )


def escalate(worker_id: int) -> FraudCase | None:
    """Open or raise the worker's case to what the unreviewed evidence warrants (never lower).

    In the caller's transaction; audited as automatic (the actor is whoever's call found
    the evidence: the worker's submit, or an admin's scan)."""
    signals = signals_of([worker_id])[worker_id]
    score = risk_score(signals)
    target = _target_action(signals)
    case = db.session.scalar(select(FraudCase).where(FraudCase.worker_id == worker_id))
    now = clock.now()
    if case is None:
        if target == FraudAction.NONE:
            return None
        case = FraudCase(
            worker_id=worker_id,
            status=CaseStatus.OPEN,
            action=FraudAction.NONE,
            risk_score=score,
            opened_at=now,
            updated_at=now,
        )
        try:
            with db.session.begin_nested():
                db.session.add(case)
        except IntegrityError:  # opened concurrently
            case = db.session.scalar(select(FraudCase).where(FraudCase.worker_id == worker_id))
            if case is None:
                return None
    if case.risk_score != score:
        case.risk_score = score
    if ACTION_RANK[target] <= ACTION_RANK[case.action]:
        return case
    before = case.action
    case.action = target
    case.status = CaseStatus.OPEN  # new evidence: a reviewer looks again
    case.updated_at = now
    if target == FraudAction.SUSPEND:
        worker = db.session.get(WorkerProfile, worker_id)
        set_worker_status(case, worker, WorkerStatus.SUSPENDED, "automatic: fraud signals")
    audit.record(
        "fraud.escalated",
        "worker",
        worker_id,
        detail={
            "from": before.value,
            "to": target.value,
            "risk_score": score,
            "automatic": True,
            "signals": [s.key for s in signals if s.effective_weight > 0][:20],
        },
    )
    return case


# --- pay under suspicion ------------------------------------------------------------------

_HELD_WHILE_OPEN = (FraudAction.RESTRICT, FraudAction.SUSPEND, FraudAction.BAN)
_HELD_ALWAYS = (FraudAction.SUSPEND, FraudAction.BAN)


def _pay_hold_condition():
    """Whose pending pay stays pending past its QA window: a worker the engine restricted or
    suspended, until a reviewer has looked (confirmed, the pay is clawed back; dismissed, it
    matures), and a suspended or banned worker until lifted."""
    return or_(
        and_(FraudCase.status == CaseStatus.OPEN, FraudCase.action.in_(_HELD_WHILE_OPEN)),
        FraudCase.action.in_(_HELD_ALWAYS),
    )


@billing.hold_maturing_pay
def workers_with_pay_held(worker_ids: list[int]) -> set[int]:
    return set(
        db.session.scalars(
            select(FraudCase.worker_id).where(
                FraudCase.worker_id.in_(worker_ids), _pay_hold_condition()
            )
        )
    )

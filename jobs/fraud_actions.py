"""Reviewing fraud cases, and appeals: graduated, reversible, audited actions.

Who reviews: platform admins (every worker), and admins of an organization whose crowd holds
the worker (members of it may read). Decisions: dismiss (no fraud: the evidence so far is
set aside), restrict (gold-heavy work), suspend, confirm (suspend and void the worker's
judgments), ban (and void), lift (end whatever action is in force). A worker appeals the
action in force (restrict, suspend or ban), one open appeal at a time; an overturned appeal
lifts it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from jobs import fraud_risk, voiding
from jobs.fraud_models import (
    ACTION_RANK,
    AppealStatus,
    CaseStatus,
    FraudAction,
    FraudAppeal,
    FraudCase,
    FraudSignal,
)
from jobs.models import Job
from marketplace import audit, clock
from marketplace.accounts.models import Role
from marketplace.auth import principal
from marketplace.database import db
from marketplace.errors import Conflict, Forbidden, NotFound
from marketplace.locking import lock
from marketplace.pagination import paginate
from workers.access import managed_worker_ids_query, my_worker_profile
from workers.models import CrowdMember, WorkerProfile, WorkerStatus

VOIDING_ACTIONS = ("confirm", "ban")


# --- who may see what ---------------------------------------------------------------------


def _can_review(worker_id: int, minimum: Role) -> bool:
    caller = principal()
    if caller.is_platform_admin:
        return True
    found = db.session.scalar(
        managed_worker_ids_query(minimum).where(CrowdMember.worker_id == worker_id).limit(1)
    )
    return found is not None


def _visible_case(case_id: int, minimum: Role = Role.MEMBER) -> FraudCase:
    case = db.session.get(FraudCase, case_id)
    if case is None or not _can_review(case.worker_id, Role.MEMBER):
        raise NotFound(f"fraud case {case_id} not found")
    if minimum != Role.MEMBER and not _can_review(case.worker_id, minimum):
        raise Forbidden("Deciding a case needs the admin role in a vendor that manages the worker.")
    return case


def _visible_worker(worker_id: int) -> WorkerProfile:
    worker = db.session.get(WorkerProfile, worker_id)
    if worker is None or not _can_review(worker_id, Role.MEMBER):
        raise NotFound(f"worker {worker_id} not found")
    return worker


def _scoped(query, worker_column):
    if principal().is_platform_admin:
        return query
    return query.where(worker_column.in_(managed_worker_ids_query(Role.MEMBER)))


# --- views --------------------------------------------------------------------------------


def _signal_view(signal: FraudSignal) -> dict[str, Any]:
    return {
        "kind": signal.kind.value,
        "key": signal.key,
        "job_id": signal.job_id,
        "weight": signal.weight,
        "unreviewed_weight": round(signal.effective_weight, 4),
        "evidence": signal.evidence,
        "created_at": signal.created_at,
        "updated_at": signal.updated_at,
    }


def _case_views(cases: list[FraudCase]) -> list[dict[str, Any]]:
    worker_ids = [c.worker_id for c in cases]
    signals = fraud_risk.signals_of(worker_ids)
    workers = {
        w.id: w
        for w in db.session.scalars(select(WorkerProfile).where(WorkerProfile.id.in_(worker_ids)))
    }
    appeals = {
        a.case_id: a
        for a in db.session.scalars(
            select(FraudAppeal).where(
                FraudAppeal.case_id.in_([c.id for c in cases]),
                FraudAppeal.status == AppealStatus.OPEN,
            )
        )
    }
    views = []
    for case in cases:
        worker = workers[case.worker_id]
        views.append(
            {
                "id": case.id,
                "worker": {"id": worker.id, "pseudonym": worker.pseudonym, "status": worker.status},
                "status": case.status,
                "action": case.action,
                "risk_score": fraud_risk.risk_score(signals[case.worker_id]),
                "total_risk_score": _total_risk(signals[case.worker_id]),
                "signals": [_signal_view(s) for s in signals[case.worker_id]],
                "opened_at": case.opened_at,
                "updated_at": case.updated_at,
                "reviewed_at": case.reviewed_at,
                "confirmed_at": case.confirmed_at,
                "note": case.note,
                "voiding": case.voiding,
                "open_appeal": appeals.get(case.id),
            }
        )
    return views


def _total_risk(signals: list[FraudSignal]) -> float:
    """The score counting reviewed evidence too (what the worker's history says overall)."""
    remaining = 1.0
    for s in signals:
        remaining *= 1.0 - s.weight
    return round(1.0 - remaining, 4)


def list_cases(args: dict[str, Any]) -> dict[str, Any]:
    """The review queue: every case for platform admins, their crowds' workers for vendors."""
    query = _scoped(select(FraudCase), FraudCase.worker_id)
    if status := args.get("status"):
        query = query.where(FraudCase.status == status)
    if action := args.get("action"):
        query = query.where(FraudCase.action == action)
    page = paginate(query, FraudCase.id, args)
    page["items"] = _case_views(page["items"])
    return page


def get_case(case_id: int) -> dict[str, Any]:
    return _case_views([_visible_case(case_id)])[0]


def worker_risk(worker_id: int) -> dict[str, Any]:
    """A worker's risk score with the evidence behind it (reviewers only, not the worker)."""
    worker = _visible_worker(worker_id)
    signals = fraud_risk.signals_of([worker.id])[worker.id]
    case = db.session.scalar(select(FraudCase).where(FraudCase.worker_id == worker.id))
    return {
        "worker": {"id": worker.id, "pseudonym": worker.pseudonym, "status": worker.status},
        "risk_score": fraud_risk.risk_score(signals),
        "total_risk_score": _total_risk(signals),
        "action": case.action if case else FraudAction.NONE,
        "case_id": case.id if case else None,
        "signals": [_signal_view(s) for s in signals],
    }


# --- decisions ----------------------------------------------------------------------------


def open_case(worker_id: int, note: str) -> dict[str, Any]:
    """Flag a worker for review by hand (or put their reviewed case back in the queue)."""
    worker = _visible_worker(worker_id)  # 404 for workers the caller cannot see at all
    if not _can_review(worker_id, Role.ADMIN):
        raise Forbidden("Flagging a worker needs the admin role in a vendor that manages them.")
    worker = lock(worker)
    now = clock.now()
    case = db.session.scalar(select(FraudCase).where(FraudCase.worker_id == worker.id))
    if case is None:
        case = FraudCase(
            worker_id=worker.id,
            action=FraudAction.NONE,
            risk_score=0.0,
            opened_at=now,
            updated_at=now,
        )
        db.session.add(case)
    case.status = CaseStatus.OPEN
    if ACTION_RANK[case.action] < ACTION_RANK[FraudAction.FLAG]:
        case.action = FraudAction.FLAG
    case.risk_score = fraud_risk.risk_score(fraud_risk.signals_of([worker.id])[worker.id])
    case.updated_at = now
    case.note = note or None
    db.session.flush()
    audit.record(
        "fraud.case_opened", "fraud_case", case.id, detail={"worker_id": worker.id, "note": note}
    )
    db.session.commit()
    return get_case(case.id)


def _mark_reviewed(worker_id: int) -> None:
    for signal in db.session.scalars(select(FraudSignal).where(FraudSignal.worker_id == worker_id)):
        signal.reviewed_weight = signal.weight


def _lift(case: FraudCase, worker: WorkerProfile, reason: str) -> None:
    fraud_risk.reinstate(case, worker, reason)
    case.action = FraudAction.NONE
    case.confirmed_at = None
    _mark_reviewed(case.worker_id)


def decide_case(case_id: int, data: dict[str, Any]) -> dict[str, Any]:
    """Apply a reviewer's decision; confirm and ban void the worker's judgments."""
    case = lock(_visible_case(case_id, Role.ADMIN))
    worker = lock(db.session.get(WorkerProfile, case.worker_id))
    decision, note = data["action"], data.get("note") or ""
    job_id = data.get("job_id")
    if job_id is not None and db.session.get(Job, job_id) is None:
        raise NotFound(f"job {job_id} not found", errors={"job_id": ["No such job."]})
    before = case.action
    reason = f"fraud review: {decision}" + (f" ({note})" if note else "")
    now = clock.now()
    if decision in ("dismiss", "lift"):
        if decision == "lift" and case.action == FraudAction.NONE:
            raise Conflict("No action is in force on this worker; nothing to lift.")
        _lift(case, worker, reason)
    elif decision == "restrict":
        fraud_risk.reinstate(case, worker, reason)  # a step down from a suspension
        case.action = FraudAction.RESTRICT
    elif decision == "suspend":
        case.action = FraudAction.SUSPEND
        fraud_risk.set_worker_status(case, worker, WorkerStatus.SUSPENDED, reason)
    elif decision == "confirm":
        case.confirmed_at = case.confirmed_at or now
        if case.action != FraudAction.BAN:  # confirming keeps a ban a ban
            case.action = FraudAction.SUSPEND
            fraud_risk.set_worker_status(case, worker, WorkerStatus.SUSPENDED, reason)
    elif decision == "ban":
        case.confirmed_at = case.confirmed_at or now
        case.action = FraudAction.BAN
        fraud_risk.set_worker_status(case, worker, WorkerStatus.BANNED, reason)
    case.status = CaseStatus.REVIEWED
    case.reviewed_at = now
    case.reviewed_by_user_id = principal().user_id
    case.updated_at = now
    case.note = note or None
    audit.record(
        f"fraud.case_{decision}",
        "fraud_case",
        case.id,
        detail={
            "worker_id": worker.id,
            "from": before.value,
            "to": case.action.value,
            "note": note,
            "job_id": job_id,
        },
    )
    # Committed before voiding: the decision (and the suspension, which stops new submits)
    # stands on its own, and the case and worker rows are not held while voiding locks task
    # rows (a submit holds its task row, then writes the case). Confirming again finishes
    # a voiding that was cut short.
    db.session.commit()
    if decision in VOIDING_ACTIONS:
        result = voiding.void_worker_judgments(worker.id, job_id, reason)  # commits per batch
        case = lock(case)
        case.voiding = {**result.as_dict(), "job_id": job_id, "at": now.isoformat()}
        db.session.commit()
    return get_case(case.id)


# --- the worker's side: standing and appeals ----------------------------------------------


def my_standing() -> dict[str, Any]:
    """The caller's own fraud standing: the action in force, why, and their latest appeal."""
    worker = my_worker_profile()
    case = db.session.scalar(select(FraudCase).where(FraudCase.worker_id == worker.id))
    appeal = None
    reasons: list[str] = []
    if case is not None:
        appeal = db.session.scalar(
            select(FraudAppeal)
            .where(FraudAppeal.worker_id == worker.id)
            .order_by(FraudAppeal.id.desc())
            .limit(1)
        )
        if case.action != FraudAction.NONE:
            # Kinds only: evidence can name other workers (collusion, shared devices).
            reasons = sorted(
                {s.kind.value for s in fraud_risk.signals_of([worker.id])[worker.id] if s.weight}
            )
    return {
        "worker_status": worker.status,
        "action": case.action if case else FraudAction.NONE,
        "under_review": bool(case and case.status == CaseStatus.OPEN),
        "pay_on_hold": bool(fraud_risk.workers_with_pay_held([worker.id])),
        "confirmed": bool(case and case.confirmed_at),
        "reasons": reasons,
        "latest_appeal": appeal,
    }


def appeal(message: str) -> FraudAppeal:
    """Appeal the action in force on the caller (one open appeal at a time)."""
    worker = lock(my_worker_profile())
    case = db.session.scalar(select(FraudCase).where(FraudCase.worker_id == worker.id))
    if case is None or ACTION_RANK[case.action] < ACTION_RANK[FraudAction.RESTRICT]:
        # A flag only puts the account in the review queue: it changes nothing to appeal.
        raise Conflict("No fraud action is in force on your account; there is nothing to appeal.")
    open_appeal = db.session.scalar(
        select(FraudAppeal.id).where(
            FraudAppeal.worker_id == worker.id, FraudAppeal.status == AppealStatus.OPEN
        )
    )
    if open_appeal is not None:
        raise Conflict("You already have an open appeal.", appeal_id=open_appeal)
    created = FraudAppeal(
        case_id=case.id,
        worker_id=worker.id,
        message=message,
        status=AppealStatus.OPEN,
        action_appealed=case.action.value,
        created_at=clock.now(),
    )
    db.session.add(created)
    db.session.flush()
    audit.record("fraud.appeal_filed", "fraud_appeal", created.id, detail={"case_id": case.id})
    db.session.commit()
    return created


def list_appeals(args: dict[str, Any]) -> dict[str, Any]:
    query = _scoped(select(FraudAppeal), FraudAppeal.worker_id)
    if status := args.get("status"):
        query = query.where(FraudAppeal.status == status)
    return paginate(query, FraudAppeal.id, args)


def decide_appeal(appeal_id: int, outcome: str, note: str) -> FraudAppeal:
    """Uphold the action, or overturn it: the action is lifted and the worker reinstated
    (judgments already voided stay voided; the note says so)."""
    found = db.session.get(FraudAppeal, appeal_id)
    if found is None or not _can_review(found.worker_id, Role.MEMBER):
        raise NotFound(f"appeal {appeal_id} not found")
    if not _can_review(found.worker_id, Role.ADMIN):
        raise Forbidden("Deciding an appeal needs the admin role in a vendor managing the worker.")
    found = lock(found)
    if found.status != AppealStatus.OPEN:
        raise Conflict(f"The appeal was already decided ({found.status.value}).")
    case = lock(db.session.get(FraudCase, found.case_id))
    now = clock.now()
    if outcome == "overturned":
        worker = lock(db.session.get(WorkerProfile, found.worker_id))
        _lift(case, worker, f"appeal {found.id} overturned")
        case.status = CaseStatus.REVIEWED
        case.reviewed_at = now
        case.reviewed_by_user_id = principal().user_id
        case.updated_at = now
        voided = (case.voiding or {}).get("voided", 0)
        if voided:
            note = f"{note} — the {voided} judgment(s) voided earlier stay voided.".lstrip(" —")
    found.status = AppealStatus(outcome)
    found.decided_at = now
    found.decided_by_user_id = principal().user_id
    found.note = note or None
    audit.record(
        f"fraud.appeal_{outcome}",
        "fraud_appeal",
        found.id,
        detail={"case_id": case.id, "worker_id": found.worker_id, "note": found.note},
    )
    db.session.commit()
    return found

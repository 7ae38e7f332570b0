"""The one place that decides whether a worker may work on a set of requirements.

`check()` answers for one worker with every unmet requirement listed; `eligible_workers()`
is the same rule as a SQL query, for matching and supply estimates at scale. A property
test holds the two to the same answers.

Rules:
- the worker's status is active;
- every required skill is held at >= min_level and has not expired;
- every required clearance has a verified, unrevoked, unexpired attestation;
- crowds: empty or containing "public" means any active worker; otherwise the worker is
  in at least one of the listed crowds;
- countries: the worker's country is one of them (when any are listed);
- languages: the worker speaks every listed language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, or_, select, text

from credentials.models import Attestation, AttestationStatus, ClearanceType, Skill, WorkerSkill
from marketplace import clock
from marketplace.database import db
from workers.models import CrowdMember, WorkerLanguage, WorkerProfile, WorkerStatus

PUBLIC_CROWD = "public"


@dataclass(frozen=True)
class SkillRequirement:
    skill: str
    min_level: int = 0


@dataclass(frozen=True)
class Requirements:
    skills: tuple[SkillRequirement, ...] = ()
    clearances: tuple[str, ...] = ()
    crowds: tuple[int | str, ...] = ()
    countries: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Requirements:
        data = data or {}
        return cls(
            skills=tuple(
                SkillRequirement(s["skill"], int(s.get("min_level", 0)))
                for s in data.get("skills", [])
            ),
            clearances=tuple(data.get("clearances", [])),
            crowds=tuple(data.get("crowds", [])),
            countries=tuple(data.get("countries", []) or []),
            languages=tuple(data.get("languages", []) or []),
        )

    @property
    def private_crowd_ids(self) -> tuple[int, ...] | None:
        """The crowd ids a worker must be in (any of), or None when the public crowd is open."""
        if not self.crowds or PUBLIC_CROWD in self.crowds:
            return None
        return tuple(int(c) for c in self.crowds)


@dataclass
class Reason:
    code: str
    requirement: str
    detail: str


@dataclass
class Eligibility:
    eligible: bool
    reasons: list[Reason] = field(default_factory=list)


def check(
    worker: WorkerProfile, requirements: Requirements, at: datetime | None = None
) -> Eligibility:
    """Whether `worker` meets `requirements` at `at` (default: now), and every reason why not."""
    at = at or clock.now()
    reasons: list[Reason] = []
    if worker.status != WorkerStatus.ACTIVE:
        reasons.append(
            Reason("worker_not_active", "status", f"the worker is {worker.status.value}")
        )

    if requirements.skills:
        held = {
            ws.skill.slug: ws
            for ws in db.session.scalars(
                select(WorkerSkill).where(WorkerSkill.worker_id == worker.id)
            )
        }
        for req in requirements.skills:
            ws = held.get(req.skill)
            if ws is None:
                reasons.append(Reason("missing_skill", req.skill, f"no level in {req.skill}"))
            elif ws.expires_at is not None and ws.expires_at <= at:
                reasons.append(Reason("skill_expired", req.skill, f"{req.skill} expired"))
            elif ws.level < req.min_level:
                reasons.append(
                    Reason(
                        "skill_level_too_low",
                        req.skill,
                        f"{req.skill} is at {ws.level}, {req.min_level} is needed",
                    )
                )

    if requirements.clearances:
        attestations = list(
            db.session.scalars(
                select(Attestation)
                .join(ClearanceType)
                .where(
                    Attestation.worker_id == worker.id,
                    ClearanceType.slug.in_(requirements.clearances),
                )
            )
        )
        for slug in requirements.clearances:
            mine = [a for a in attestations if a.clearance_type.slug == slug]
            if any(_current(a, at) for a in mine):
                continue
            if any(a.status == AttestationStatus.REVOKED for a in mine):
                code, detail = "clearance_revoked", f"{slug} was revoked"
            elif any(
                a.status in (AttestationStatus.VERIFIED, AttestationStatus.EXPIRED) for a in mine
            ):
                code, detail = "clearance_expired", f"{slug} has expired"
            elif any(a.status == AttestationStatus.PENDING for a in mine):
                code, detail = "clearance_pending", f"{slug} awaits verification"
            else:
                code, detail = "missing_clearance", f"no {slug} clearance"
            reasons.append(Reason(code, slug, detail))

    crowd_ids = requirements.private_crowd_ids
    if crowd_ids is not None:
        member = db.session.scalar(
            select(CrowdMember.id)
            .where(CrowdMember.worker_id == worker.id, CrowdMember.crowd_id.in_(crowd_ids))
            .limit(1)
        )
        if member is None:
            reasons.append(Reason("not_in_crowd", "crowds", "not in any of the job's crowds"))

    if requirements.countries and worker.country not in requirements.countries:
        reasons.append(
            Reason(
                "country_not_allowed",
                "countries",
                f"country {worker.country or 'unknown'} is not allowed",
            )
        )

    spoken = worker.language_codes
    for language in requirements.languages:
        if language not in spoken:
            reasons.append(Reason("missing_language", language, f"does not list {language}"))

    return Eligibility(eligible=not reasons, reasons=reasons)


def _current(attestation: Attestation, at: datetime) -> bool:
    return (
        attestation.status == AttestationStatus.VERIFIED
        and attestation.revoked_at is None
        and (attestation.expires_at is None or attestation.expires_at > at)
    )


def eligible_workers(requirements: Requirements, at: datetime | None = None) -> Select:
    """`SELECT worker_profiles.id` of every worker `check()` would accept, as one query."""
    at = at or clock.now()
    conditions = [WorkerProfile.status == WorkerStatus.ACTIVE]
    for req in requirements.skills:
        conditions.append(
            exists().where(
                WorkerSkill.worker_id == WorkerProfile.id,
                WorkerSkill.skill_id
                == select(Skill.id).where(Skill.slug == req.skill).scalar_subquery(),
                WorkerSkill.level >= req.min_level,
                or_(WorkerSkill.expires_at.is_(None), WorkerSkill.expires_at > at),
            )
        )
    for slug in requirements.clearances:
        conditions.append(
            exists().where(
                Attestation.worker_id == WorkerProfile.id,
                Attestation.clearance_type_id
                == select(ClearanceType.id).where(ClearanceType.slug == slug).scalar_subquery(),
                Attestation.status == AttestationStatus.VERIFIED,
                Attestation.revoked_at.is_(None),
                or_(Attestation.expires_at.is_(None), Attestation.expires_at > at),
            )
        )
    crowd_ids = requirements.private_crowd_ids
    if crowd_ids is not None:
        conditions.append(
            exists().where(
                CrowdMember.worker_id == WorkerProfile.id, CrowdMember.crowd_id.in_(crowd_ids)
            )
        )
    if requirements.countries:
        conditions.append(WorkerProfile.country.in_(requirements.countries))
    for language in requirements.languages:
        conditions.append(
            exists().where(
                WorkerLanguage.worker_id == WorkerProfile.id, WorkerLanguage.code == language
            )
        )
    return select(WorkerProfile.id).where(and_(*conditions))


def is_eligible(worker_id: int, requirements: Requirements, at: datetime | None = None) -> bool:
    """The query form for one worker (used where only yes/no matters, e.g. at submit time)."""
    query = eligible_workers(requirements, at).where(WorkerProfile.id == worker_id)
    return db.session.scalar(query) is not None


# Each required skill or clearance is one EXISTS; past a handful PostgreSQL spends longer
# choosing a join order than running the query (1.5 s of planning for 20 skills + 10
# clearances, bench/bench_eligibility.py). Keeping the written order then plans in ~2 ms.
_FIXED_ORDER_ABOVE = 6


def plan_in_written_order(requirements: Requirements) -> None:
    """Ask PostgreSQL (for this transaction) not to search join orders for big requirement sets."""
    if db.engine.dialect.name != "postgresql":
        return
    if len(requirements.skills) + len(requirements.clearances) > _FIXED_ORDER_ABOVE:
        db.session.execute(text("SET LOCAL join_collapse_limit = 1"))


def count_eligible(requirements: dict[str, Any]) -> int:
    """How many workers meet the requirements now."""
    from sqlalchemy import func

    parsed = Requirements.from_dict(requirements)
    plan_in_written_order(parsed)
    query = eligible_workers(parsed)
    return db.session.scalar(select(func.count()).select_from(query.subquery()))


def list_visible_eligible(requirements: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Eligible workers the caller manages (all of them, for platform admins), paged."""
    from marketplace.auth import principal
    from marketplace.pagination import paginate
    from workers.access import managed_worker_ids_query

    parsed = Requirements.from_dict(requirements)
    plan_in_written_order(parsed)
    ids = eligible_workers(parsed)
    query = select(WorkerProfile).where(WorkerProfile.id.in_(ids))
    if not principal().is_platform_admin:
        query = query.where(WorkerProfile.id.in_(managed_worker_ids_query()))
    return paginate(query, WorkerProfile.id, args)

"""The skills catalog and workers' skill levels."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from credentials.models import Skill, SkillSource, WorkerSkill
from marketplace import audit, clock
from marketplace.auth import principal
from marketplace.database import db
from marketplace.errors import Conflict, NotFound
from marketplace.pagination import paginate
from workers.models import WorkerProfile


def _platform_admin_only() -> None:
    if not principal().is_platform_admin:
        raise NotFound("not found")


def create_skill(data: dict[str, Any]) -> Skill:
    """Add a skill to the catalog (platform admins)."""
    _platform_admin_only()
    skill = Skill(
        slug=data["slug"],
        name=data["name"],
        description=data.get("description", ""),
        created_at=clock.now(),
    )
    db.session.add(skill)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("A skill with this slug exists.", errors={"slug": ["Taken."]}) from None
    audit.record("skill.created", "skill", skill.id, detail={"slug": skill.slug})
    db.session.commit()
    return skill


def list_skills(args: dict[str, Any]) -> dict[str, Any]:
    query = select(Skill)
    if prefix := args.get("prefix"):
        query = query.where(Skill.slug.startswith(prefix, autoescape=True))
    return paginate(query, Skill.id, args)


def get_skill(skill_id: int) -> Skill:
    skill = db.session.get(Skill, skill_id)
    if skill is None:
        raise NotFound(f"skill {skill_id} not found")
    return skill


def skill_by_slug(slug: str) -> Skill | None:
    return db.session.scalar(select(Skill).where(Skill.slug == slug))


def set_skill_level(
    worker: WorkerProfile,
    skill: Skill,
    level: int,
    source: SkillSource,
    *,
    source_ref: str | None = None,
    expires_at: datetime | None = None,
) -> WorkerSkill:
    """Record a worker's level in a skill (adds to the session; the caller commits).

    Assessments and admins write it here; so will measured performance (quality issue).
    """
    row = db.session.scalar(
        select(WorkerSkill)
        .where(WorkerSkill.worker_id == worker.id, WorkerSkill.skill_id == skill.id)
        .with_for_update(of=WorkerSkill)
    )
    now = clock.now()
    if row is None:
        row = WorkerSkill(worker_id=worker.id, skill_id=skill.id)
        db.session.add(row)
    previous = row.level
    row.level = level
    row.source = source
    row.source_ref = source_ref
    row.granted_at = now
    row.expires_at = expires_at
    audit.record(
        "worker.skill_level_set",
        "worker",
        worker.id,
        detail={
            "skill": skill.slug,
            "from": previous,
            "to": level,
            "source": source.value,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return row


def worker_skills(worker: WorkerProfile) -> list[WorkerSkill]:
    return list(
        db.session.scalars(
            select(WorkerSkill).where(WorkerSkill.worker_id == worker.id).order_by(WorkerSkill.id)
        )
    )


def grant_skill_by_admin(
    worker: WorkerProfile, skill_id: int, level: int, expires_at: datetime | None, reason: str
) -> WorkerSkill:
    """A platform admin sets a worker's level directly (audited with a reason)."""
    _platform_admin_only()
    skill = get_skill(skill_id)
    row = set_skill_level(
        worker, skill, level, SkillSource.ADMIN, source_ref=reason[:64], expires_at=expires_at
    )
    db.session.commit()
    return row

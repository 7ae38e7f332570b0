"""Property test: random worker states and requirement sets never fool the eligibility service.

Each example builds a small world straight from the models (a few workers with statuses,
skills, attestations, crowds, countries and languages), then judges every worker with a
plain-Python oracle that reads only the generated data, never the database. `check()` must
agree with the oracle worker by worker and name exactly the unmet requirements;
`eligible_workers()` (the SQL form) and `is_eligible()` must accept exactly the oracle's set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credentials.eligibility import Requirements, check, eligible_workers, is_eligible
from credentials.models import (
    Attestation,
    AttestationStatus,
    ClearanceType,
    Skill,
    SkillSource,
    Verifier,
    WorkerSkill,
)
from marketplace.accounts.models import AccountType, Organization, OrgKind, User
from marketplace.database import db
from tests.conftest import truncate_all
from workers.models import Crowd, CrowdMember, WorkerLanguage, WorkerProfile, WorkerStatus

AT = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
CREATED = AT - timedelta(days=400)

SKILLS = ("image.bbox", "text.sentiment.es", "medical.radiology")
CLEARANCES = ("hipaa", "background-check", "nda")
UNKNOWN_SKILL = "audio.nonexistent"
UNKNOWN_CLEARANCE = "clearance.nonexistent"
N_CROWDS = 3
COUNTRIES = ("US", "DE", "IN")
LANGUAGES = ("en", "es", "hi")

# Expiry instants around AT (the instant an example is judged at is drawn in `scenarios`).
expiries = st.sampled_from(
    [
        None,
        AT - timedelta(days=30),
        AT - timedelta(microseconds=1),
        AT,
        AT + timedelta(microseconds=1),
        AT + timedelta(days=30),
    ]
)
levels = st.sampled_from([0, 1, 50, 99, 100])


@dataclass(frozen=True)
class SkillSpec:
    skill: str
    level: int
    expires_at: datetime | None


@dataclass(frozen=True)
class AttestationSpec:
    clearance: str
    status: AttestationStatus
    expires_at: datetime | None


@dataclass(frozen=True)
class WorkerSpec:
    status: WorkerStatus
    country: str | None
    languages: tuple[str, ...]
    skills: tuple[SkillSpec, ...]
    attestations: tuple[AttestationSpec, ...]
    crowds: frozenset[int]  # indexes into the world's crowds


@st.composite
def worker_specs(draw) -> WorkerSpec:
    held = draw(st.lists(st.sampled_from(SKILLS), unique=True, max_size=len(SKILLS)))
    return WorkerSpec(
        # two in three are active, so most examples get past the status rule
        status=draw(st.sampled_from([WorkerStatus.ACTIVE] * 9 + list(WorkerStatus))),
        country=draw(st.one_of(st.none(), st.sampled_from(COUNTRIES))),
        languages=tuple(draw(st.lists(st.sampled_from(LANGUAGES), unique=True, max_size=3))),
        skills=tuple(SkillSpec(s, draw(levels), draw(expiries)) for s in held),
        # several attestations for one clearance are allowed (an old revoked one, a new one…)
        attestations=tuple(
            draw(
                st.lists(
                    st.builds(
                        AttestationSpec,
                        clearance=st.sampled_from(CLEARANCES),
                        status=st.one_of(
                            st.just(AttestationStatus.VERIFIED),
                            st.sampled_from(list(AttestationStatus)),
                        ),
                        expires_at=expiries,
                    ),
                    max_size=4,
                )
            )
        ),
        crowds=frozenset(draw(st.sets(st.integers(0, N_CROWDS - 1), max_size=N_CROWDS))),
    )


# A crowd in a requirement: an index into the world's crowds, "public", or a crowd that does
# not exist; ids may arrive as strings (JSON bodies), which Requirements accepts.
crowd_refs = st.one_of(
    st.integers(0, N_CROWDS - 1).map(lambda i: ("crowd", i)),
    st.just(("public", None)),
    st.just(("missing", None)),
)


@st.composite
def random_requirements(draw) -> dict[str, Any]:
    return {
        "skills": draw(
            st.lists(
                st.fixed_dictionaries(
                    {"skill": st.sampled_from((*SKILLS, UNKNOWN_SKILL)), "min_level": levels}
                ),
                max_size=3,
            )
        ),
        "clearances": draw(
            st.lists(st.sampled_from((*CLEARANCES, UNKNOWN_CLEARANCE)), unique=True, max_size=2)
        ),
        "crowds": draw(st.lists(crowd_refs, max_size=2)),
        "countries": draw(st.lists(st.sampled_from(COUNTRIES), unique=True, max_size=2)),
        "languages": draw(st.lists(st.sampled_from(LANGUAGES), unique=True, max_size=2)),
    }


@st.composite
def requirements_near(draw, worker: WorkerSpec) -> dict[str, Any]:
    """Requirements cut to fit one worker, give or take one: the boundary cases live here."""
    near = draw(st.lists(st.sampled_from(worker.skills), unique=True)) if worker.skills else []
    skills = [
        {"skill": s.skill, "min_level": draw(st.sampled_from([0, s.level, s.level + 1]))}
        for s in near
    ]
    held = sorted({a.clearance for a in worker.attestations})
    clearances = draw(st.lists(st.sampled_from(held), unique=True, max_size=2)) if held else []
    crowds = [("crowd", i) for i in sorted(worker.crowds)][: draw(st.integers(0, 1))]
    countries = [worker.country] if worker.country and draw(st.booleans()) else []
    languages = (
        draw(st.lists(st.sampled_from(worker.languages), unique=True)) if worker.languages else []
    )
    extra = draw(random_requirements()) if draw(st.integers(0, 3)) == 0 else {}
    return {
        "skills": skills + extra.get("skills", []),
        "clearances": list(dict.fromkeys(clearances + extra.get("clearances", []))),
        "crowds": crowds + extra.get("crowds", []),
        "countries": list(dict.fromkeys(countries + extra.get("countries", []))),
        "languages": list(dict.fromkeys(languages + extra.get("languages", []))),
    }


@st.composite
def scenarios(draw) -> tuple[list[WorkerSpec], dict[str, Any], datetime]:
    workers = draw(st.lists(worker_specs(), min_size=1, max_size=6))
    if draw(st.booleans()):
        req = draw(random_requirements())
    else:
        req = draw(requirements_near(draw(st.sampled_from(workers))))
    req["crowd_ids_as_strings"] = draw(st.booleans())
    # Judge at AT or at the expiry of something the requirements ask for, so that expiries
    # land exactly on the instant and the "valid means expires_at > at" edge gets tested.
    required = {item["skill"] for item in req["skills"]} | set(req["clearances"])
    instants = {AT}
    for worker in workers:
        instants.update(s.expires_at for s in worker.skills if s.skill in required)
        instants.update(a.expires_at for a in worker.attestations if a.clearance in required)
    instants.discard(None)
    return workers, req, draw(st.sampled_from(sorted(instants)))


def unmet_requirements(worker: WorkerSpec, req: dict[str, Any], at: datetime) -> set[str]:
    """The oracle: which requirements `worker` fails at `at`, straight from the generated data."""
    unmet: set[str] = set()
    if worker.status != WorkerStatus.ACTIVE:
        unmet.add("status")
    for item in req["skills"]:
        ok = any(
            s.skill == item["skill"]
            and s.level >= item["min_level"]
            and (s.expires_at is None or s.expires_at > at)
            for s in worker.skills
        )
        if not ok:
            unmet.add(item["skill"])
    for slug in req["clearances"]:
        ok = any(
            a.clearance == slug
            and a.status == AttestationStatus.VERIFIED
            and (a.expires_at is None or a.expires_at > at)
            for a in worker.attestations
        )
        if not ok:
            unmet.add(slug)
    kinds = {kind for kind, _ in req["crowds"]}
    if req["crowds"] and "public" not in kinds:
        wanted = {i for kind, i in req["crowds"] if kind == "crowd"}
        if not wanted & worker.crowds:
            unmet.add("crowds")
    if req["countries"] and worker.country not in req["countries"]:
        unmet.add("countries")
    for code in req["languages"]:
        if code not in worker.languages:
            unmet.add(code)
    return unmet


REASON_CODES = {
    "status": {"worker_not_active"},
    "skill": {"missing_skill", "skill_expired", "skill_level_too_low"},
    "clearance": {
        "missing_clearance",
        "clearance_revoked",
        "clearance_expired",
        "clearance_pending",
    },
    "crowds": {"not_in_crowd"},
    "countries": {"country_not_allowed"},
    "language": {"missing_language"},
}


def _kind(requirement: str) -> str:
    if requirement in (*SKILLS, UNKNOWN_SKILL):
        return "skill"
    if requirement in (*CLEARANCES, UNKNOWN_CLEARANCE):
        return "clearance"
    if requirement in LANGUAGES:
        return "language"
    return requirement


def _build_world(workers: list[WorkerSpec]) -> tuple[list[int], list[int]]:
    """Commit the generated state; return the crowd ids and the worker ids, in order."""
    org = Organization(name="Vendor", kind=OrgKind.VENDOR, created_at=CREATED)
    db.session.add(org)
    db.session.flush()
    crowds = [
        Crowd(organization_id=org.id, name=f"crowd {i}", created_at=CREATED)
        for i in range(N_CROWDS)
    ]
    skills = {slug: Skill(slug=slug, name=slug, created_at=CREATED) for slug in SKILLS}
    clearances = {
        slug: ClearanceType(slug=slug, name=slug, verifier=Verifier.PLATFORM, created_at=CREATED)
        for slug in CLEARANCES
    }
    db.session.add_all([*crowds, *skills.values(), *clearances.values()])
    db.session.flush()

    worker_ids = []
    for n, spec in enumerate(workers):
        user = User(
            email=f"w{n}@example.org",
            email_normalized=f"w{n}@example.org",
            name=f"Worker {n}",
            password_hash="x",
            account_type=AccountType.WORKER,
            created_at=CREATED,
            password_changed_at=CREATED,
        )
        db.session.add(user)
        db.session.flush()
        profile = WorkerProfile(
            user_id=user.id,
            pseudonym=f"w_{n}",
            display_name=f"Worker {n}",
            status=spec.status,
            country=spec.country,
            languages=[{"code": c, "proficiency": "fluent"} for c in spec.languages],
            availability={},
            claimed_skills=[],
            created_at=CREATED,
        )
        db.session.add(profile)
        db.session.flush()
        worker_ids.append(profile.id)
        # kept in step with profile.languages, as workers.services._sync_languages does
        db.session.add_all(
            WorkerLanguage(worker_id=profile.id, code=c, proficiency="fluent")
            for c in spec.languages
        )
        db.session.add_all(
            WorkerSkill(
                worker_id=profile.id,
                skill_id=skills[s.skill].id,
                level=s.level,
                source=SkillSource.ASSESSMENT,
                granted_at=CREATED,
                expires_at=s.expires_at,
            )
            for s in spec.skills
        )
        for a in spec.attestations:
            decided = a.status != AttestationStatus.PENDING
            db.session.add(
                Attestation(
                    worker_id=profile.id,
                    clearance_type_id=clearances[a.clearance].id,
                    status=a.status,
                    note="",
                    submitted_at=CREATED,
                    decided_at=CREATED if decided else None,
                    expires_at=a.expires_at,
                    revoked_at=AT - timedelta(days=1)
                    if a.status == AttestationStatus.REVOKED
                    else None,
                )
            )
        db.session.add_all(
            CrowdMember(
                crowd_id=crowds[i].id, worker_id=profile.id, joined_at=CREATED, source="added"
            )
            for i in sorted(spec.crowds)
        )
    db.session.commit()
    return [c.id for c in crowds], worker_ids


def _requirements_dict(req: dict[str, Any], crowd_ids: list[int]) -> dict[str, Any]:
    missing_crowd = max(crowd_ids) + 1000
    crowds: list[int | str] = []
    for kind, i in req["crowds"]:
        if kind == "public":
            crowds.append("public")
            continue
        crowd_id = crowd_ids[i] if kind == "crowd" else missing_crowd
        crowds.append(str(crowd_id) if req["crowd_ids_as_strings"] else crowd_id)
    return {
        "skills": req["skills"],
        "clearances": req["clearances"],
        "crowds": crowds,
        "countries": req["countries"],
        "languages": req["languages"],
    }


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_eligibility_agrees_with_an_independent_oracle(app, scenario):
    workers, req, at = scenario
    truncate_all(app)  # the autouse cleanup runs once per test, not once per example
    with app.app_context():
        crowd_ids, worker_ids = _build_world(workers)
        requirements = Requirements.from_dict(_requirements_dict(req, crowd_ids))
        expected_eligible = set()

        for worker_id, spec in zip(worker_ids, workers, strict=True):
            unmet = unmet_requirements(spec, req, at)
            profile = db.session.get(WorkerProfile, worker_id)
            result = check(profile, requirements, at=at)
            reasons = {r.requirement for r in result.reasons}

            if unmet:
                assert not result.eligible, (spec, req, unmet)
            else:
                expected_eligible.add(worker_id)
            assert result.eligible == (not unmet), (spec, req, unmet, result)
            assert result.eligible == (not result.reasons)
            assert reasons == unmet, (spec, req, result.reasons)
            for reason in result.reasons:
                assert reason.code in REASON_CODES[_kind(reason.requirement)], reason
            assert is_eligible(worker_id, requirements, at=at) == (not unmet), (spec, req)

        listed = set(db.session.scalars(eligible_workers(requirements, at=at)))
        assert listed == expected_eligible, (workers, req)

        # Each requirement on its own too, so an SQL condition that is off by one shows even
        # when another requirement would have hidden it in the full set.
        for part in _single_requirements(req):
            expected = {
                worker_id
                for worker_id, spec in zip(worker_ids, workers, strict=True)
                if not unmet_requirements(spec, part, at)
            }
            alone = Requirements.from_dict(_requirements_dict(part, crowd_ids))
            listed = set(db.session.scalars(eligible_workers(alone, at=at)))
            assert listed == expected, (workers, part)
        db.session.remove()


def _single_requirements(req: dict[str, Any]) -> list[dict[str, Any]]:
    empty = {"skills": [], "clearances": [], "crowds": [], "countries": [], "languages": []}
    parts = [dict(empty)]  # status alone
    parts += [{**empty, "skills": [item]} for item in req["skills"]]
    parts += [{**empty, "clearances": [slug]} for slug in req["clearances"]]
    parts += [{**empty, "languages": [code]} for code in req["languages"]]
    if req["crowds"]:
        parts.append({**empty, "crowds": req["crowds"]})
    if req["countries"]:
        parts.append({**empty, "countries": req["countries"]})
    return [{**part, "crowd_ids_as_strings": req["crowd_ids_as_strings"]} for part in parts]

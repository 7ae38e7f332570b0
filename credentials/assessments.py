"""Qualification tests: question banks with hidden keys, timed attempts, scoring, grading.

A graded attempt draws a random subset of the bank, must be submitted before its deadline
(enforced here, by the server clock), and on a pass grants the assessment's skill level.
A practice attempt is never scored: each answer comes back with the key and explanation.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from credentials import scoring
from credentials.models import (
    Assessment,
    AssessmentAttempt,
    AssessmentQuestion,
    AttemptAnswer,
    AttemptMode,
    AttemptStatus,
    QuestionKind,
    SkillSource,
)
from credentials.skills import get_skill, set_skill_level
from marketplace import audit, clock
from marketplace.accounts.models import Role
from marketplace.auth import principal, require_org_role
from marketplace.database import db
from marketplace.errors import Conflict, Forbidden, NotFound, ValidationFailed
from marketplace.locking import get_for_update, lock
from marketplace.pagination import paginate
from workers.access import my_worker_profile
from workers.models import WorkerStatus

_FINAL = (AttemptStatus.PASSED, AttemptStatus.FAILED, AttemptStatus.EXPIRED)


# --- authoring ---------------------------------------------------------------------------


def _manageable(assessment_id: int) -> Assessment:
    assessment = db.session.get(Assessment, assessment_id)
    if assessment is None:
        raise NotFound(f"assessment {assessment_id} not found")
    require_org_role(assessment.organization_id, Role.ADMIN)
    return assessment


def create_assessment(organization_id: int, data: dict[str, Any]) -> Assessment:
    """An organization (vendor, client or the platform) publishes a test for a skill."""
    require_org_role(organization_id, Role.ADMIN)
    skill = get_skill(data["skill_id"])
    assessment = Assessment(
        skill_id=skill.id,
        organization_id=organization_id,
        title=data["title"],
        instructions=data.get("instructions", ""),
        questions_per_attempt=data["questions_per_attempt"],
        time_limit_seconds=data["time_limit_seconds"],
        pass_mark=data["pass_mark"],
        retake_cooldown_seconds=data.get("retake_cooldown_seconds", 0),
        max_attempts=data["max_attempts"],
        grant_level=data["grant_level"],
        grant_validity_days=data.get("grant_validity_days"),
        active=True,
        created_at=clock.now(),
    )
    db.session.add(assessment)
    db.session.flush()
    audit.record(
        "assessment.created",
        "assessment",
        assessment.id,
        organization_id=organization_id,
        detail={"skill": skill.slug},
    )
    db.session.commit()
    return assessment


def update_assessment(assessment_id: int, changes: dict[str, Any]) -> Assessment:
    assessment = _manageable(assessment_id)
    for field, value in changes.items():
        setattr(assessment, field, value)
    audit.record(
        "assessment.updated",
        "assessment",
        assessment.id,
        organization_id=assessment.organization_id,
        detail={"fields": sorted(changes)},
    )
    db.session.commit()
    return assessment


def add_questions(assessment_id: int, questions: list[dict[str, Any]]) -> list[AssessmentQuestion]:
    """Add questions (with their hidden keys) to the bank; all or nothing."""
    assessment = _manageable(assessment_id)
    errors: dict[str, Any] = {}
    for index, q in enumerate(questions):
        if q["kind"] == QuestionKind.FREE_TEXT:
            continue  # graded by a person; any key is only a guide for the reviewer
        problem = scoring.check_answer_key(q["kind"], q.get("content", {}), q.get("answer_key"))
        if problem:
            errors[f"questions.{index}"] = [problem]
    if errors:
        raise ValidationFailed("Some questions are malformed.", errors=errors)
    now = clock.now()
    rows = [
        AssessmentQuestion(
            assessment_id=assessment.id,
            kind=q["kind"],
            prompt=q["prompt"],
            content=q.get("content", {}),
            answer_key=q.get("answer_key"),
            tolerance=q.get("tolerance"),
            iou_threshold=q.get("iou_threshold"),
            explanation=q.get("explanation", ""),
            points=q.get("points", 1.0),
            created_at=now,
        )
        for q in questions
    ]
    db.session.add_all(rows)
    db.session.flush()
    audit.record(
        "assessment.questions_added",
        "assessment",
        assessment.id,
        organization_id=assessment.organization_id,
        detail={"count": len(rows)},
    )
    db.session.commit()
    return rows


def list_questions(assessment_id: int, args: dict[str, Any]) -> dict[str, Any]:
    """The bank with its keys, for the assessment's owners only."""
    _manageable(assessment_id)
    query = select(AssessmentQuestion).where(AssessmentQuestion.assessment_id == assessment_id)
    return paginate(query, AssessmentQuestion.id, args)


def list_assessments(args: dict[str, Any]) -> dict[str, Any]:
    query = select(Assessment).where(Assessment.active.is_(True))
    if skill_id := args.get("skill_id"):
        query = query.where(Assessment.skill_id == skill_id)
    return paginate(query, Assessment.id, args)


def get_assessment(assessment_id: int) -> Assessment:
    assessment = db.session.get(Assessment, assessment_id)
    if assessment is None or not assessment.active:
        raise NotFound(f"assessment {assessment_id} not found")
    return assessment


# --- attempts ----------------------------------------------------------------------------


def _graded_attempts(worker_id: int, assessment_id: int) -> list[AssessmentAttempt]:
    return list(
        db.session.scalars(
            select(AssessmentAttempt)
            .where(
                AssessmentAttempt.worker_id == worker_id,
                AssessmentAttempt.assessment_id == assessment_id,
                AssessmentAttempt.mode == AttemptMode.GRADED,
            )
            .order_by(AssessmentAttempt.id)
        )
    )


def _expire_if_late(attempt: AssessmentAttempt) -> None:
    if attempt.status == AttemptStatus.IN_PROGRESS and clock.now() > attempt.deadline_at:
        attempt.status = (
            AttemptStatus.EXPIRED if attempt.mode == AttemptMode.GRADED else AttemptStatus.COMPLETED
        )
        attempt.finished_at = attempt.deadline_at


def start_attempt(assessment_id: int, mode: AttemptMode) -> AssessmentAttempt:
    """Draw a random subset of the bank for the calling worker and start the timer."""
    worker = my_worker_profile()
    if worker.status in (WorkerStatus.SUSPENDED, WorkerStatus.BANNED, WorkerStatus.OFFBOARDED):
        raise Forbidden(f"A {worker.status.value} worker cannot take assessments.")
    # Lock the worker row so two concurrent starts cannot both pass the attempt checks.
    worker = lock(worker)
    assessment = get_assessment(assessment_id)
    now = clock.now()
    if mode == AttemptMode.GRADED:
        attempts = _graded_attempts(worker.id, assessment.id)
        for attempt in attempts:
            _expire_if_late(attempt)
        if any(a.status == AttemptStatus.IN_PROGRESS for a in attempts):
            raise Conflict("You have an attempt in progress; submit it first.")
        if any(a.status in (AttemptStatus.PASSED, AttemptStatus.GRADING) for a in attempts):
            raise Conflict("You have already passed (or await grading on) this assessment.")
        if len(attempts) >= assessment.max_attempts:
            raise Conflict(f"You have used all {assessment.max_attempts} attempts.")
        if attempts:
            last_end = attempts[-1].finished_at or attempts[-1].deadline_at
            ready_at = last_end + timedelta(seconds=assessment.retake_cooldown_seconds)
            if now < ready_at:
                wait = int((ready_at - now).total_seconds()) + 1
                raise Conflict(
                    f"You can retake this assessment in {wait} seconds.",
                    retry_at=ready_at.isoformat(),
                    headers={"Retry-After": str(wait)},
                )
    bank = list(
        db.session.scalars(
            select(AssessmentQuestion.id).where(AssessmentQuestion.assessment_id == assessment.id)
        )
    )
    if not bank:
        raise Conflict("This assessment has no questions yet.")
    drawn = random.SystemRandom().sample(bank, min(assessment.questions_per_attempt, len(bank)))
    attempt = AssessmentAttempt(
        assessment_id=assessment.id,
        worker_id=worker.id,
        mode=mode,
        status=AttemptStatus.IN_PROGRESS,
        question_ids=drawn,
        started_at=now,
        deadline_at=now + timedelta(seconds=assessment.time_limit_seconds),
    )
    db.session.add(attempt)
    db.session.flush()
    audit.record(
        "assessment.attempt_started",
        "assessment_attempt",
        attempt.id,
        detail={"assessment_id": assessment.id, "mode": mode.value, "worker_id": worker.id},
    )
    db.session.commit()
    return attempt


class AttemptWithQuestions:
    """An attempt together with its drawn questions, for dumping with AttemptSchema."""

    def __init__(self, attempt: AssessmentAttempt, questions: list[AssessmentQuestion]):
        self._attempt = attempt
        self.questions = questions

    def __getattr__(self, name: str) -> Any:
        return getattr(self._attempt, name)


def attempt_questions(attempt: AssessmentAttempt) -> list[AssessmentQuestion]:
    by_id = {
        q.id: q
        for q in db.session.scalars(
            select(AssessmentQuestion).where(AssessmentQuestion.id.in_(attempt.question_ids))
        )
    }
    return [by_id[i] for i in attempt.question_ids if i in by_id]


def my_attempt(attempt_id: int) -> AssessmentAttempt:
    """One of the calling worker's attempts (404 for anyone else's)."""
    worker = my_worker_profile()
    attempt = db.session.get(AssessmentAttempt, attempt_id)
    if attempt is None or attempt.worker_id != worker.id:
        raise NotFound(f"attempt {attempt_id} not found")
    if attempt.status == AttemptStatus.IN_PROGRESS and clock.now() > attempt.deadline_at:
        _expire_if_late(attempt)
        db.session.commit()
    return attempt


def my_attempts(args: dict[str, Any]) -> dict[str, Any]:
    worker = my_worker_profile()
    query = select(AssessmentAttempt).where(AssessmentAttempt.worker_id == worker.id)
    return paginate(query, AssessmentAttempt.id, args)


def worker_attempts(worker_id: int, args: dict[str, Any]) -> dict[str, Any]:
    """A managed worker's attempts (scores and outcomes, never their answers)."""
    from workers.access import get_visible_worker

    worker = get_visible_worker(worker_id)
    query = select(AssessmentAttempt).where(AssessmentAttempt.worker_id == worker.id)
    return paginate(query, AssessmentAttempt.id, args)


def answers_of(attempt: AssessmentAttempt) -> list[AttemptAnswer]:
    return list(
        db.session.scalars(
            select(AttemptAnswer)
            .where(AttemptAnswer.attempt_id == attempt.id)
            .order_by(AttemptAnswer.id)
        )
    )


def _load_in_progress(attempt_id: int) -> AssessmentAttempt:
    attempt = my_attempt(attempt_id)
    attempt = lock(attempt)
    if attempt.status != AttemptStatus.IN_PROGRESS:
        _expire_if_late(attempt)
        raise Conflict(f"This attempt is {attempt.status.value}; it takes no more answers.")
    if clock.now() > attempt.deadline_at:
        _expire_if_late(attempt)
        db.session.commit()
        raise Conflict("The time limit has passed; the attempt has expired.")
    return attempt


def _question_in(attempt: AssessmentAttempt, question_id: int) -> AssessmentQuestion:
    if question_id not in attempt.question_ids:
        raise ValidationFailed(
            "That question is not part of this attempt.",
            errors={"question_id": ["Not in this attempt."]},
        )
    return db.session.get(AssessmentQuestion, question_id)


def _shape_error(index: str, error: scoring.AnswerShapeError) -> ValidationFailed:
    return ValidationFailed(f"An answer has the wrong shape: {error}", errors={index: [str(error)]})


def practice_answer(attempt_id: int, question_id: int, answer: Any) -> dict[str, Any]:
    """Answer one question of a practice attempt; the key and explanation come straight back."""
    attempt = _load_in_progress(attempt_id)
    if attempt.mode != AttemptMode.PRACTICE:
        raise Conflict("Graded attempts are submitted whole, with POST …/submit.")
    question = _question_in(attempt, question_id)
    try:
        correct = scoring.auto_score(question, answer)
    except scoring.AnswerShapeError as error:
        raise _shape_error("answer", error) from None
    existing = db.session.scalar(
        select(AttemptAnswer).where(
            AttemptAnswer.attempt_id == attempt.id, AttemptAnswer.question_id == question.id
        )
    )
    if existing is None:
        existing = AttemptAnswer(attempt_id=attempt.id, question_id=question.id)
        db.session.add(existing)
    existing.answer = answer
    existing.correct = correct
    existing.answered_at = clock.now()
    existing.needs_grading = False
    answered = {a.question_id for a in answers_of(attempt)} | {question.id}
    if answered >= set(attempt.question_ids):
        attempt.status = AttemptStatus.COMPLETED
        attempt.finished_at = clock.now()
    db.session.commit()
    return {
        "question_id": question.id,
        "correct": correct,
        "answer_key": question.answer_key,
        "explanation": question.explanation,
    }


def submit_attempt(attempt_id: int, submitted: list[dict[str, Any]]) -> AssessmentAttempt:
    """Hand in a graded attempt: auto-score what can be, queue free text for a reviewer."""
    attempt = _load_in_progress(attempt_id)
    if attempt.mode != AttemptMode.GRADED:
        raise Conflict("Practice attempts are answered one question at a time.")
    seen: set[int] = set()
    now = clock.now()
    rows = []
    for index, item in enumerate(submitted):
        question = _question_in(attempt, item["question_id"])
        if question.id in seen:
            raise ValidationFailed(
                "A question is answered twice.",
                errors={f"answers.{index}.question_id": ["Answered twice."]},
            )
        seen.add(question.id)
        try:
            correct = scoring.auto_score(question, item["answer"])
        except scoring.AnswerShapeError as error:
            raise _shape_error(f"answers.{index}.answer", error) from None
        rows.append(
            AttemptAnswer(
                attempt_id=attempt.id,
                question_id=question.id,
                answer=item["answer"],
                correct=correct,
                points_awarded=None if correct is None else (question.points if correct else 0.0),
                needs_grading=correct is None,
                answered_at=now,
            )
        )
    db.session.add_all(rows)
    attempt.submitted_at = now
    db.session.flush()
    if any(r.needs_grading for r in rows):
        attempt.status = AttemptStatus.GRADING
    else:
        _finalise(attempt)
    audit.record(
        "assessment.attempt_submitted",
        "assessment_attempt",
        attempt.id,
        detail={"status": attempt.status.value, "score": attempt.score},
    )
    db.session.commit()
    return attempt


def _finalise(attempt: AssessmentAttempt) -> None:
    """Score a fully graded attempt; a pass grants the skill level."""
    questions = attempt_questions(attempt)
    total = sum(q.points for q in questions)
    awarded = sum(a.points_awarded or 0.0 for a in answers_of(attempt))
    attempt.score = round(100.0 * awarded / total, 2) if total else 0.0
    attempt.finished_at = clock.now()
    assessment = attempt.assessment
    if attempt.score >= assessment.pass_mark:
        attempt.status = AttemptStatus.PASSED
        from workers.models import WorkerProfile

        worker = db.session.get(WorkerProfile, attempt.worker_id)
        expires_at = (
            clock.now() + timedelta(days=assessment.grant_validity_days)
            if assessment.grant_validity_days
            else None
        )
        set_skill_level(
            worker,
            assessment.skill,
            assessment.grant_level,
            SkillSource.ASSESSMENT,
            source_ref=f"attempt:{attempt.id}",
            expires_at=expires_at,
        )
    else:
        attempt.status = AttemptStatus.FAILED


# --- grading queue -----------------------------------------------------------------------


def grading_queue(args: dict[str, Any]) -> dict[str, Any]:
    """Free-text answers waiting for a reviewer in assessments the caller's orgs own."""
    caller = principal()
    query = (
        select(AttemptAnswer)
        .join(AssessmentAttempt, AssessmentAttempt.id == AttemptAnswer.attempt_id)
        .join(Assessment, Assessment.id == AssessmentAttempt.assessment_id)
        .where(AttemptAnswer.needs_grading.is_(True))
    )
    if not caller.is_platform_admin:
        from workers.access import org_ids_with_role

        query = query.where(Assessment.organization_id.in_(org_ids_with_role(Role.ADMIN) or [-1]))
    return paginate(query, AttemptAnswer.id, args)


def grade_answer(answer_id: int, points: float, feedback: str | None) -> AttemptAnswer:
    """A reviewer grades one free-text answer; the attempt is scored once none are left."""
    answer = get_for_update(AttemptAnswer, answer_id)
    if answer is None:
        raise NotFound(f"answer {answer_id} not found")
    attempt = answer.attempt
    require_org_role(attempt.assessment.organization_id, Role.ADMIN)
    if not answer.needs_grading:
        raise Conflict("This answer has already been graded.")
    if points < 0 or points > answer.question.points:
        raise ValidationFailed(
            f"Points must be between 0 and {answer.question.points}.",
            errors={"points": [f"0 to {answer.question.points}."]},
        )
    caller = principal()
    if caller.user_id is not None:
        from workers.models import WorkerProfile

        worker = db.session.get(WorkerProfile, attempt.worker_id)
        if worker.user_id == caller.user_id:
            raise Forbidden("You cannot grade your own answers.")
    answer.points_awarded = points
    answer.correct = points >= answer.question.points
    answer.needs_grading = False
    answer.graded_by_user_id = caller.user_id
    answer.graded_at = clock.now()
    answer.feedback = feedback
    db.session.flush()
    remaining = db.session.scalar(
        select(func.count())
        .select_from(AttemptAnswer)
        .where(AttemptAnswer.attempt_id == attempt.id, AttemptAnswer.needs_grading.is_(True))
    )
    if remaining == 0 and attempt.status == AttemptStatus.GRADING:
        _finalise(attempt)
    audit.record(
        "assessment.answer_graded",
        "attempt_answer",
        answer.id,
        organization_id=attempt.assessment.organization_id,
        detail={"points": points, "attempt_id": attempt.id},
    )
    db.session.commit()
    return answer

from __future__ import annotations

import json

from sqlalchemy import func, select

from credentials.models import AssessmentAttempt, WorkerSkill
from tests.helpers import assert_problem
from tests.workforce import make_skill

QUESTIONS = [
    {
        "kind": "single_choice",
        "prompt": "Which view is this?",
        "content": {"options": ["axial", "coronal", "sagittal"]},
        "answer_key": "axial",
        "explanation": "The slice is horizontal.",
    },
    {
        "kind": "multi_choice",
        "prompt": "Which findings are present?",
        "content": {"options": ["nodule", "effusion", "fracture"]},
        "answer_key": ["nodule", "effusion"],
    },
    {
        "kind": "numeric",
        "prompt": "Nodule size in mm?",
        "answer_key": 12.0,
        "tolerance": 1.5,
    },
    {
        "kind": "text",
        "prompt": "Name the organ.",
        "answer_key": ["Lung", "lungs"],
    },
    {
        "kind": "bbox",
        "prompt": "Box the nodule.",
        "content": {"image_url": "https://example.org/ct.png"},
        "answer_key": {"x": 10, "y": 10, "w": 20, "h": 20},
        "iou_threshold": 0.5,
    },
]

RIGHT = {
    "single_choice": "axial",
    "multi_choice": ["effusion", "nodule"],
    "numeric": 13.0,
    "text": "  LUNGS ",
    "bbox": {"x": 11, "y": 11, "w": 20, "h": 20},
}
WRONG = {
    "single_choice": "coronal",
    "multi_choice": ["nodule"],
    "numeric": 20,
    "text": "heart",
    "bbox": {"x": 100, "y": 100, "w": 5, "h": 5},
}


def _setup(api, app, **rules):
    admin = api.admin(app)
    vendor = api.signup("vendor")
    skill = make_skill(api, admin)
    body = {
        "skill_id": skill["id"],
        "title": "Radiology basics",
        "questions_per_attempt": 5,
        "time_limit_seconds": 600,
        "pass_mark": 80,
        "retake_cooldown_seconds": 3600,
        "max_attempts": 2,
        "grant_level": 70,
        "grant_validity_days": 365,
        **rules,
    }
    response = api.post(
        f"/api/v1/organizations/{vendor.organization['id']}/assessments", vendor.token, json=body
    )
    assert response.status_code == 201, response.get_json()
    assessment = response.get_json()
    added = api.post(
        f"/api/v1/assessments/{assessment['id']}/questions",
        vendor.token,
        json={"questions": QUESTIONS},
    )
    assert added.status_code == 201, added.get_json()
    return admin, vendor, skill, assessment


def _answers(attempt, table):
    return [{"question_id": q["id"], "answer": table[q["kind"]]} for q in attempt["questions"]]


def _no_keys(payload) -> None:
    text = json.dumps(payload)
    assert "answer_key" not in text
    assert "explanation" not in text
    assert "The slice is horizontal" not in text


def test_signup_assessment_pass_grants_skill(api, app):
    _, _, skill, assessment = _setup(api, app)
    worker = api.signup("worker")
    started = api.post(f"/api/v1/assessments/{assessment['id']}/attempts", worker.token, json={})
    assert started.status_code == 201, started.get_json()
    attempt = started.get_json()
    assert len(attempt["questions"]) == 5
    _no_keys(attempt)
    submitted = api.post(
        f"/api/v1/attempts/{attempt['id']}/submit",
        worker.token,
        json={"answers": _answers(attempt, RIGHT)},
    )
    assert submitted.status_code == 200, submitted.get_json()
    result = submitted.get_json()
    assert result["status"] == "passed" and result["score"] == 100.0 and result["passed"]
    _no_keys(result)
    skills = api.get("/api/v1/workers/me/skills", worker.token).get_json()["items"]
    assert [(s["skill"]["slug"], s["level"], s["source"]) for s in skills] == [
        (skill["slug"], 70, "assessment")
    ]
    assert skills[0]["expires_at"] is not None


def test_failing_grants_nothing_and_cooldown_and_attempt_limit_hold(
    api, app, manual_clock, db_session
):
    _, _, _, assessment = _setup(api, app, retake_cooldown_seconds=3600, max_attempts=2)
    worker = api.signup("worker")
    path = f"/api/v1/assessments/{assessment['id']}/attempts"
    attempt = api.post(path, worker.token, json={}).get_json()
    result = api.post(
        f"/api/v1/attempts/{attempt['id']}/submit",
        worker.token,
        json={"answers": _answers(attempt, WRONG)},
    ).get_json()
    assert result["status"] == "failed" and result["score"] == 0.0
    assert db_session.scalar(select(func.count()).select_from(WorkerSkill)) == 0
    # retake before the cooldown: refused, with when to come back
    body = assert_problem(api.post(path, worker.token, json={}), 409)
    assert "retry_at" in body
    manual_clock.advance(3601)
    token = api.login(worker.email)["access_token"]
    second = api.post(path, token, json={})
    assert second.status_code == 201
    api.post(
        f"/api/v1/attempts/{second.get_json()['id']}/submit",
        token,
        json={"answers": _answers(second.get_json(), WRONG)},
    )
    manual_clock.advance(3601)
    token = api.login(worker.email)["access_token"]
    assert_problem(api.post(path, token, json={}), 409)
    assert db_session.scalar(select(func.count()).select_from(AssessmentAttempt)) == 2


def test_submit_after_time_limit_is_refused(api, app, manual_clock, db_session):
    _, _, _, assessment = _setup(api, app, time_limit_seconds=60)
    worker = api.signup("worker")
    attempt = api.post(
        f"/api/v1/assessments/{assessment['id']}/attempts", worker.token, json={}
    ).get_json()
    manual_clock.advance(61)
    response = api.post(
        f"/api/v1/attempts/{attempt['id']}/submit",
        worker.token,
        json={"answers": _answers(attempt, RIGHT)},
    )
    assert_problem(response, 409)
    assert api.get(f"/api/v1/attempts/{attempt['id']}", worker.token).get_json()["status"] == (
        "expired"
    )
    assert db_session.scalar(select(func.count()).select_from(WorkerSkill)) == 0


def test_replaying_a_submitted_attempt_is_refused(api, app):
    _, _, _, assessment = _setup(api, app)
    worker = api.signup("worker")
    attempt = api.post(
        f"/api/v1/assessments/{assessment['id']}/attempts", worker.token, json={}
    ).get_json()
    body = {"answers": _answers(attempt, WRONG)}
    first = api.post(f"/api/v1/attempts/{attempt['id']}/submit", worker.token, json=body)
    assert first.get_json()["status"] == "failed"
    body = {"answers": _answers(attempt, RIGHT)}
    assert_problem(
        api.post(f"/api/v1/attempts/{attempt['id']}/submit", worker.token, json=body), 409
    )
    assert api.get(f"/api/v1/attempts/{attempt['id']}", worker.token).get_json()["status"] == (
        "failed"
    )


def test_wrong_answer_shapes_are_422_and_change_nothing(api, app):
    _, _, _, assessment = _setup(api, app)
    worker = api.signup("worker")
    attempt = api.post(
        f"/api/v1/assessments/{assessment['id']}/attempts", worker.token, json={}
    ).get_json()
    single = next(q for q in attempt["questions"] if q["kind"] == "single_choice")
    bad = [{"question_id": single["id"], "answer": "not an option"}]
    assert_problem(
        api.post(f"/api/v1/attempts/{attempt['id']}/submit", worker.token, json={"answers": bad}),
        422,
        field="answers.0.answer",
    )
    stranger = [{"question_id": 999999, "answer": "axial"}]
    assert_problem(
        api.post(
            f"/api/v1/attempts/{attempt['id']}/submit", worker.token, json={"answers": stranger}
        ),
        422,
        field="question_id",
    )
    assert api.get(f"/api/v1/attempts/{attempt['id']}", worker.token).get_json()["status"] == (
        "in_progress"
    )


def test_practice_mode_shows_answers_and_grants_nothing(api, app, db_session):
    _, _, _, assessment = _setup(api, app)
    worker = api.signup("worker")
    attempt = api.post(
        f"/api/v1/assessments/{assessment['id']}/attempts",
        worker.token,
        json={"mode": "practice"},
    ).get_json()
    _no_keys(attempt)
    single = next(q for q in attempt["questions"] if q["kind"] == "single_choice")
    feedback = api.post(
        f"/api/v1/attempts/{attempt['id']}/answers",
        worker.token,
        json={"question_id": single["id"], "answer": "coronal"},
    ).get_json()
    assert feedback == {
        "question_id": single["id"],
        "correct": False,
        "answer_key": "axial",
        "explanation": "The slice is horizontal.",
    }
    # practice never counts against graded attempts, nor grants a skill
    graded = api.post(f"/api/v1/assessments/{assessment['id']}/attempts", worker.token, json={})
    assert graded.status_code == 201
    assert db_session.scalar(select(func.count()).select_from(WorkerSkill)) == 0


def test_free_text_goes_to_grading_queue(api, app):
    admin = api.admin(app)
    vendor = api.signup("vendor")
    skill = make_skill(api, admin, "text.summaries")
    assessment = api.post(
        f"/api/v1/organizations/{vendor.organization['id']}/assessments",
        vendor.token,
        json={
            "skill_id": skill["id"],
            "title": "Summaries",
            "questions_per_attempt": 1,
            "time_limit_seconds": 600,
            "pass_mark": 50,
            "max_attempts": 1,
            "grant_level": 60,
        },
    ).get_json()
    api.post(
        f"/api/v1/assessments/{assessment['id']}/questions",
        vendor.token,
        json={"questions": [{"kind": "free_text", "prompt": "Summarise.", "points": 2}]},
    )
    worker = api.signup("worker")
    attempt = api.post(
        f"/api/v1/assessments/{assessment['id']}/attempts", worker.token, json={}
    ).get_json()
    result = api.post(
        f"/api/v1/attempts/{attempt['id']}/submit",
        worker.token,
        json={"answers": [{"question_id": attempt["questions"][0]["id"], "answer": "A summary."}]},
    ).get_json()
    assert result["status"] == "grading"
    # another vendor sees nothing to grade; the owner sees the answer
    other = api.signup("vendor")
    assert api.get("/api/v1/grading", other.token).get_json()["items"] == []
    queue = api.get("/api/v1/grading", vendor.token).get_json()["items"]
    assert [item["answer"] for item in queue] == ["A summary."]
    assert_problem(
        api.post(f"/api/v1/grading/{queue[0]['id']}", other.token, json={"points": 2}), 404
    )
    assert_problem(
        api.post(f"/api/v1/grading/{queue[0]['id']}", vendor.token, json={"points": 5}),
        422,
        field="points",
    )
    graded = api.post(
        f"/api/v1/grading/{queue[0]['id']}", vendor.token, json={"points": 2, "feedback": "Good"}
    )
    assert graded.status_code == 200
    final = api.get(f"/api/v1/attempts/{attempt['id']}", worker.token).get_json()
    assert final["status"] == "passed" and final["score"] == 100.0
    skills = api.get("/api/v1/workers/me/skills", worker.token).get_json()["items"]
    assert skills[0]["level"] == 60


def test_workers_never_see_keys_anywhere(api, app):
    _, vendor, _, assessment = _setup(api, app)
    worker = api.signup("worker")
    attempt = api.post(
        f"/api/v1/assessments/{assessment['id']}/attempts", worker.token, json={}
    ).get_json()
    for path in (
        "/api/v1/assessments",
        f"/api/v1/assessments/{assessment['id']}",
        f"/api/v1/attempts/{attempt['id']}",
        "/api/v1/workers/me/attempts",
    ):
        response = api.get(path, worker.token)
        assert response.status_code == 200, path
        _no_keys(response.get_json())
    assert_problem(api.get(f"/api/v1/assessments/{assessment['id']}/questions", worker.token), 404)
    # and the owner's bank does carry them
    bank = api.get(f"/api/v1/assessments/{assessment['id']}/questions", vendor.token).get_json()
    assert all("answer_key" in q for q in bank["items"])


def test_other_workers_attempts_are_invisible(api, app):
    _, _, _, assessment = _setup(api, app)
    one = api.signup("worker")
    two = api.signup("worker")
    attempt = api.post(
        f"/api/v1/assessments/{assessment['id']}/attempts", one.token, json={}
    ).get_json()
    assert_problem(api.get(f"/api/v1/attempts/{attempt['id']}", two.token), 404)
    assert_problem(
        api.post(
            f"/api/v1/attempts/{attempt['id']}/submit",
            two.token,
            json={"answers": _answers(attempt, RIGHT)},
        ),
        404,
    )


def test_malformed_question_keys_are_rejected_whole(api, app, db_session):
    admin, vendor, _, assessment = _setup(api, app)
    bad = [
        {
            "kind": "single_choice",
            "prompt": "?",
            "content": {"options": ["a", "b"]},
            "answer_key": "c",
        },
        {"kind": "numeric", "prompt": "?", "answer_key": "twelve"},
    ]
    response = api.post(
        f"/api/v1/assessments/{assessment['id']}/questions", vendor.token, json={"questions": bad}
    )
    body = assert_problem(response, 422)
    assert set(body["errors"]) == {"questions.0", "questions.1"}
    bank = api.get(f"/api/v1/assessments/{assessment['id']}/questions", vendor.token).get_json()
    assert len(bank["items"]) == len(QUESTIONS)


def test_vendor_sees_its_workers_attempt_outcomes_only(api, app):
    from tests.workforce import invite_and_join, make_crowd, worker_id

    _, vendor, _, assessment = _setup(api, app)
    worker = api.signup("worker")
    invite_and_join(api, vendor, make_crowd(api, vendor), worker)
    attempt = api.post(
        f"/api/v1/assessments/{assessment['id']}/attempts", worker.token, json={}
    ).get_json()
    api.post(
        f"/api/v1/attempts/{attempt['id']}/submit",
        worker.token,
        json={"answers": _answers(attempt, RIGHT)},
    )
    wid = worker_id(api, worker)
    listed = api.get(f"/api/v1/workers/{wid}/attempts", vendor.token).get_json()["items"]
    assert [(a["status"], a["score"]) for a in listed] == [("passed", 100.0)]
    stranger = api.signup("vendor")
    assert_problem(api.get(f"/api/v1/workers/{wid}/attempts", stranger.token), 404)

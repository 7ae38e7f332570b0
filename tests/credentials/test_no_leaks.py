"""Crawl every GET route a worker can reach and look for answer keys in the responses."""

from __future__ import annotations

import itertools
import json
import re

from tests.workforce import make_skill

SECRET_KEY_OPTION = "zebra-key-marker"
SECRET_EXPLANATION = "explanation-marker-7f3a"


def _fill(rule: str, ids: range) -> list[str]:
    names = re.findall(r"<(?:int:)?(\w+)>", rule)
    paths = []
    for combo in itertools.product(ids, repeat=len(names)):
        path = rule
        for value in combo:
            path = re.sub(r"<(?:int:)?\w+>", str(value), path, count=1)
        paths.append(path)
    return paths


def test_no_worker_facing_get_route_reveals_an_answer_key(api, app):
    admin = api.admin(app)
    vendor = api.signup("vendor")
    skill = make_skill(api, admin)
    assessment = api.post(
        f"/api/v1/organizations/{vendor.organization['id']}/assessments",
        vendor.token,
        json={
            "skill_id": skill["id"],
            "title": "Keys stay secret",
            "questions_per_attempt": 2,
            "time_limit_seconds": 600,
            "pass_mark": 50,
            "max_attempts": 3,
            "grant_level": 50,
        },
    ).get_json()
    api.post(
        f"/api/v1/assessments/{assessment['id']}/questions",
        vendor.token,
        json={
            "questions": [
                {
                    "kind": "single_choice",
                    "prompt": "Pick",
                    "content": {"options": ["lion", SECRET_KEY_OPTION + "-not"]},
                    "answer_key": "lion",
                    "explanation": SECRET_EXPLANATION,
                },
                {
                    "kind": "text",
                    "prompt": "Type the word",
                    "answer_key": SECRET_KEY_OPTION,
                    "explanation": SECRET_EXPLANATION,
                },
            ]
        },
    )
    worker = api.signup("worker")
    other = api.signup("worker")
    attempt = api.post(
        f"/api/v1/assessments/{assessment['id']}/attempts", worker.token, json={}
    ).get_json()
    # the other worker has submitted answers that must not leak either
    theirs = api.post(
        f"/api/v1/assessments/{assessment['id']}/attempts", other.token, json={}
    ).get_json()
    api.post(
        f"/api/v1/attempts/{theirs['id']}/submit",
        other.token,
        json={
            "answers": [
                {"question_id": q["id"], "answer": "other-worker-answer-marker"}
                for q in theirs["questions"]
                if q["kind"] == "text"
            ]
        },
    )
    assert attempt["id"]
    rules = [
        r.rule
        for r in app.url_map.iter_rules()
        if "GET" in r.methods and r.rule.startswith("/api/v1") and "openapi" not in r.rule
    ]
    checked = 0
    for rule in rules:
        for path in _fill(rule, range(1, 4)):
            response = api.get(path, worker.token)
            assert response.status_code < 500, (path, response.get_data(as_text=True))
            if response.status_code != 200:
                continue
            checked += 1
            text = json.dumps(response.get_json())
            for secret in (
                f'"{SECRET_KEY_OPTION}"',
                SECRET_EXPLANATION,
                "answer_key",
                "other-worker-answer-marker",
            ):
                assert secret not in text, (path, secret)
    assert checked > 10

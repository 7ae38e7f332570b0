from __future__ import annotations

import csv
import io
import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from jobs import import_rows, imports
from jobs.leasing import GOLD_REDUNDANCY
from jobs.models import Task
from marketplace.models import AuditEvent
from tests.helpers import assert_problem
from tests.jobs.helpers import active_worker, create_job, fund, lease

NDJSON = "application/x-ndjson"
CSV = "text/csv"


def lines(rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def items(count: int, start: int = 0, prefix: str = "item") -> list[dict]:
    return [
        {"external_id": f"{prefix}-{i}", "payload": {"image_url": f"https://example.org/{i}.jpg"}}
        for i in range(start, start + count)
    ]


def upload(api, account, job_id, body, content_type=NDJSON, partial=False):
    path = f"/api/v1/jobs/{job_id}/tasks" + ("?partial=true" if partial else "")
    return api.post(path, account.token, data=body, content_type=content_type)


def imported(api, account, job_id, body, content_type=NDJSON, partial=False) -> dict:
    response = upload(api, account, job_id, body, content_type, partial)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


class ChunkStream(io.RawIOBase):
    """A request body read from a generator, as a server hands over a chunked upload."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def upload_streamed(api, account, job_id, chunks, content_type=NDJSON, partial=False):
    """POST a body of unknown length (Transfer-Encoding: chunked) produced by a generator.

    The test client would read a generator or file given as `data=` whole and send a
    Content-Length, so the stream goes in as the WSGI input, the way gunicorn passes it."""
    path = f"/api/v1/jobs/{job_id}/tasks" + ("?partial=true" if partial else "")
    return api.post(
        path,
        account.token,
        content_type=content_type,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input": ChunkStream(chunks), "wsgi.input_terminated": True},
    )


def tasks_of(db_session, job_id) -> list[Task]:
    return list(db_session.scalars(select(Task).where(Task.job_id == job_id).order_by(Task.id)))


def count_tasks(db_session, job_id=None) -> int:
    query = select(func.count()).select_from(Task)
    if job_id is not None:
        query = query.where(Task.job_id == job_id)
    return db_session.scalar(query)


# --- happy paths -----------------------------------------------------------------------------


def test_ndjson_import_stores_tasks_gold_and_prelabels(api, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    body = lines(
        [
            {"external_id": "a", "payload": {"image_url": "https://example.org/a.jpg"}},
            {
                "external_id": "b",
                "payload": {"image_url": "https://example.org/b.jpg", "tags": [1, 2.5, None]},
                "prelabel": {"answer": "dog", "confidence": 0.75},
                "priority": 7,
            },
            {"external_id": "g", "payload": {"image_url": "g.jpg"}, "gold_answer": "cat"},
            {"payload": {"no": "external id"}, "priority": -100},
        ]
    )
    result = imported(api, client, job["id"], "\n" + body + "\n\n")
    assert result == {"created": 4, "unchanged": 0, "error_count": 0, "errors": []}

    a, b, g, anonymous = tasks_of(db_session, job["id"])
    assert (a.external_id, a.payload, a.is_gold, a.gold_answer, a.prelabel) == (
        "a",
        {"image_url": "https://example.org/a.jpg"},
        False,
        None,
        None,
    )
    assert (a.status.value, a.priority, a.redundancy_target, a.live_count) == ("open", 0, 3, 0)
    assert a.created_at is not None and a.prelabel_confidence is None
    assert b.payload["tags"] == [1, 2.5, None]
    assert (b.prelabel, b.prelabel_confidence, b.priority) == ("dog", 0.75, 7)
    assert (g.is_gold, g.gold_answer, g.redundancy_target) == (True, "cat", GOLD_REDUNDANCY)
    assert (anonymous.external_id, anonymous.priority) == (None, -100)

    # the client reads its tasks back through the API, gold answers included
    listed = api.get(f"/api/v1/jobs/{job['id']}/tasks", client.token).get_json()["items"]
    assert [t["external_id"] for t in listed] == ["a", "b", "g", None]
    assert listed[2]["gold_answer"] == "cat"

    events = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "job.tasks_imported")
    ).all()
    assert len(events) == 1
    assert events[0].object_id == str(job["id"])
    assert events[0].detail == {
        "format": "ndjson",
        "partial": False,
        "rows": 4,
        "created": 4,
        "unchanged": 0,
        "error_count": 0,
    }


def test_payload_values_are_stored_exactly_on_both_parsing_paths(api, db_session):
    """Most rows take a fast parser; rows with long numbers or \\u escapes the careful one.
    Either way the stored payload is the value that was sent, digit for digit."""
    client = api.signup("client")
    job = create_job(api, client)
    payloads = [
        {"id": 123456789012345678, "f": 0.1, "g": 2.5e-7, "neg": -7, "text": "café ✓"},
        {"id": 9223372036854775807, "small": -9223372036854775808},  # int64's ends
        {"text": "tab\there \u00e9", "nested": [{"a": [True, False, None]}], "empty": {}},
    ]
    body = "\n".join(
        json.dumps({"external_id": f"p{i}", "payload": p}, ensure_ascii=i != 0)
        for i, p in enumerate(payloads)
    )
    assert imported(api, client, job["id"], body)["created"] == 3
    assert [t.payload for t in tasks_of(db_session, job["id"])] == payloads


def test_characters_copy_treats_specially_are_stored_as_sent(api, db_session):
    """On PostgreSQL rows go in as COPY text, where tab, newline and backslash are special."""
    client = api.signup("client")
    job = create_job(api, client)
    rows = [
        {"external_id": "tab\there", "payload": {"path": "C:\\data\\n.jpg", "q": 'say "hi"'}},
        {"external_id": "new\nline\r", "payload": {"text": "line\nbreak\ttab \\N"}},
        {"external_id": "back\\slash \\N", "payload": {"k": "\\."}, "gold_answer": "cat"},
        {"external_id": "\\.", "payload": {"x": 1},
         "prelabel": {"answer": "dog", "confidence": 1e-05}},
    ]  # fmt: skip
    assert imported(api, client, job["id"], lines(rows))["created"] == 4
    stored = tasks_of(db_session, job["id"])
    assert [(t.external_id, t.payload) for t in stored] == [
        (row["external_id"], row["payload"]) for row in rows
    ]
    assert (stored[2].gold_answer, stored[3].prelabel, stored[3].prelabel_confidence) == (
        "cat", "dog", 1e-05
    )  # fmt: skip
    # and a re-import finds every one of them unchanged
    assert imported(api, client, job["id"], lines(rows))["unchanged"] == 4


def test_csv_import_with_data_columns(api, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    body = (
        "\ufeffexternal_id,image_url,caption,gold_answer,prelabel_answer,prelabel_confidence,"
        "priority\r\n"
        'c1,https://example.org/1.jpg,"a cat, sleeping",,dog,0.6,5\r\n'
        'c2,https://example.org/2.jpg,"two\nlines",cat,,,\r\n'
        'c3,https://example.org/3.jpg,,"""dog""",,,-3\r\n'
    )
    result = imported(api, client, job["id"], body.encode(), CSV)
    assert (result["created"], result["error_count"]) == (3, 0)
    c1, c2, c3 = tasks_of(db_session, job["id"])
    assert c1.payload == {"image_url": "https://example.org/1.jpg", "caption": "a cat, sleeping"}
    assert (c1.prelabel, c1.prelabel_confidence, c1.priority, c1.is_gold) == ("dog", 0.6, 5, False)
    assert c2.payload["caption"] == "two\nlines"
    assert (c2.is_gold, c2.gold_answer, c2.redundancy_target) == (True, "cat", GOLD_REDUNDANCY)
    # an answer cell may be plain text or JSON text
    assert (c3.gold_answer, c3.priority, c3.payload["caption"]) == ("dog", -3, "")
    event = db_session.scalar(select(AuditEvent).where(AuditEvent.action == "job.tasks_imported"))
    assert event.detail["format"] == "csv"


def test_csv_import_with_a_json_payload_column(api, db_session):
    client = api.signup("client")
    job = create_job(
        api, client, answer_spec={"type": "multi_choice", "labels": ["red", "green", "blue"]}
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["external_id", "payload", "gold_answer", "prelabel_answer", "priority"])
    writer.writerow(["p1", json.dumps({"text": "x", "n": 1}), '["red","blue"]', "", "1"])
    writer.writerow(["p2", json.dumps({"text": "y"}), "", "", ""])
    result = imported(api, client, job["id"], out.getvalue(), f"{CSV}; charset=utf-8")
    assert result["created"] == 2
    p1, p2 = tasks_of(db_session, job["id"])
    assert (p1.payload, p1.gold_answer, p1.priority) == ({"text": "x", "n": 1}, ["red", "blue"], 1)
    assert (p2.payload, p2.is_gold) == ({"text": "y"}, False)


def test_an_empty_body_imports_nothing(api, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    assert imported(api, client, job["id"], b"")["created"] == 0
    assert imported(api, client, job["id"], b"", CSV)["created"] == 0
    assert imported(api, client, job["id"], b"external_id,url\r\n", CSV)["created"] == 0


# --- idempotent re-import ------------------------------------------------------------------


def test_reimporting_the_same_file_changes_nothing(api, db_session, monkeypatch):
    monkeypatch.setattr(imports, "BATCH_SIZE", 200)
    client = api.signup("client")
    job = create_job(api, client)
    rows = items(1500)  # several batches
    rows[3]["gold_answer"] = "dog"
    rows[4]["prelabel"] = {"answer": "cat", "confidence": 1}
    rows[5]["priority"] = 3
    rows.append({"payload": {"no": "id"}})  # rows without an external_id are always new
    body = lines(rows)
    assert imported(api, client, job["id"], body)["created"] == 1501
    again = imported(api, client, job["id"], body)
    assert (again["created"], again["unchanged"], again["error_count"]) == (1, 1500, 0)
    assert count_tasks(db_session, job["id"]) == 1502

    # key order and number spelling do not make content different
    reordered = json.dumps({"payload": {"image_url": "https://example.org/4.jpg"},
                            "prelabel": {"confidence": 1.0, "answer": "cat"},
                            "external_id": "item-4"})  # fmt: skip
    assert imported(api, client, job["id"], reordered)["unchanged"] == 1

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["external_id", "image_url", "gold_answer"])
    writer.writerows([["c-1", "u1", ""], ["c-2", "u2", "cat"]])
    assert imported(api, client, job["id"], out.getvalue(), CSV)["created"] == 2
    assert imported(api, client, job["id"], out.getvalue(), CSV)["unchanged"] == 2


def test_conflicting_reimport_is_a_row_error(api, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    imported(api, client, job["id"], lines(items(3)))
    changed = items(4)
    changed[1]["payload"]["image_url"] = "https://example.org/other.jpg"
    changed[2]["gold_answer"] = "cat"

    refused = assert_problem(upload(api, client, job["id"], lines(changed)), 422)
    assert refused["error_count"] == 2 and refused["created"] == 0
    assert refused["errors"] == [
        {
            "row": 2,
            "external_id": "item-1",
            "errors": {"external_id": ["external_id item-1 exists with different content."]},
        },
        {
            "row": 3,
            "external_id": "item-2",
            "errors": {"external_id": ["external_id item-2 exists with different content."]},
        },
    ]
    assert count_tasks(db_session, job["id"]) == 3

    kept = imported(api, client, job["id"], lines(changed), partial=True)
    assert (kept["created"], kept["unchanged"], kept["error_count"]) == (1, 1, 2)
    assert tasks_of(db_session, job["id"])[1].payload["image_url"] == "https://example.org/1.jpg"


@pytest.mark.parametrize("filter_says", ["as it is", "always seen"])
def test_duplicate_external_ids_within_one_upload(api, db_session, monkeypatch, filter_says):
    monkeypatch.setattr(imports, "BATCH_SIZE", 1000)
    if filter_says == "always seen":  # every row looked up, as when the filter is wrong
        monkeypatch.setattr(imports._SeenFilter, "add", lambda self, key: True)
    client = api.signup("client")
    job = create_job(api, client)
    rows = items(2500)
    rows[10] = dict(rows[3])  # same batch, same content
    rows[2200] = {**rows[5], "priority": 1}  # a later batch
    refused = assert_problem(upload(api, client, job["id"], lines(rows)), 422)
    assert [(e["row"], e["external_id"]) for e in refused["errors"]] == [
        (11, "item-3"),
        (2201, "item-5"),
    ]
    assert "row 4" in refused["errors"][0]["errors"]["external_id"][0]
    assert "more than once" in refused["errors"][1]["errors"]["external_id"][0]
    assert count_tasks(db_session) == 0

    kept = imported(api, client, job["id"], lines(rows), partial=True)
    assert (kept["created"], kept["error_count"]) == (2498, 2)
    assert tasks_of(db_session, job["id"])[5].priority == 0  # the first occurrence won

    # the job now holds external_ids, so every row is looked up: repeats are still caught
    more = items(2500, start=5000)
    more[1500] = more[20]
    kept = imported(api, client, job["id"], lines(rows + more), partial=True)
    assert (kept["created"], kept["unchanged"], kept["error_count"]) == (2499, 2498, 3)
    assert [e["row"] for e in kept["errors"]] == [11, 2201, 4001]


# --- bad rows --------------------------------------------------------------------------------


BAD_ROWS = [
    ('{"payload": {"a": 1}', "_schema"),  # malformed JSON
    ("[1, 2]", "_schema"),
    ('"just a string"', "_schema"),
    ("{}", "payload"),
    ('{"payload": [1]}', "payload"),
    ('{"payload": {}, "colour": "red"}', "colour"),
    ('{"payload": {}, "external_id": 5}', "external_id"),
    ('{"payload": {}, "external_id": ""}', "external_id"),
    ('{"payload": {}, "external_id": "' + "x" * 201 + '"}', "external_id"),
    ('{"payload": {}, "gold_answer": "horse"}', "gold_answer"),
    ('{"payload": {}, "gold_answer": ["cat"]}', "gold_answer"),
    ('{"payload": {}, "prelabel": "cat"}', "prelabel"),
    ('{"payload": {}, "prelabel": {"answer": "cat"}}', "prelabel"),
    ('{"payload": {}, "prelabel": {"answer": "cat", "confidence": 1.5}}', "prelabel"),
    ('{"payload": {}, "prelabel": {"answer": "cat", "confidence": true}}', "prelabel"),
    ('{"payload": {}, "prelabel": {"answer": "emu", "confidence": 0.5}}', "prelabel"),
    ('{"payload": {}, "prelabel": {"answer": "cat", "confidence": 0.5, "x": 1}}', "prelabel"),
    ('{"payload": {}, "priority": 101}', "priority"),
    ('{"payload": {}, "priority": 1.5}', "priority"),
    ('{"payload": {}, "priority": "high"}', "priority"),
    ('{"payload": {}, "priority": false}', "priority"),
    ('{"payload": {"text": "nul \\u0000 here"}}', "payload"),
    ('{"payload": {"text": "lone \\ud800 surrogate"}}', "payload"),
    ('{"payload": {"bad\\u0000key": 1}}', "payload"),
    ('{"payload": {"n": NaN}}', "_schema"),
    ('{"payload": {"n": 1e999}}', "payload"),
    ('{"payload": {"n": 99999999999999999999}}', "payload"),
    ('{"payload": {"n": ' + "9" * 5000 + "}}", "_schema"),
    ("[" * 100_000 + "]" * 100_000, "_schema"),
    ('{"payload": {}, "\\u0000": 1}', "\\u0000"),
]


def test_bad_rows_are_reported_with_their_row_numbers_and_nothing_is_written(api, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    good = lines(items(2))
    body = good + "\n".join(line for line, _ in BAD_ROWS) + "\n" + lines(items(1, start=2))
    refused = assert_problem(upload(api, client, job["id"], body), 422)
    assert refused["error_count"] == len(BAD_ROWS) and refused["rows"] == len(BAD_ROWS) + 3
    assert "nothing was imported" in refused["detail"]
    for (line, field), error in zip(BAD_ROWS, refused["errors"], strict=True):
        assert field in error["errors"], (line[:80], error)
    assert [e["row"] for e in refused["errors"]] == list(range(3, 3 + len(BAD_ROWS)))
    assert count_tasks(db_session) == 0
    assert db_session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "job.tasks_imported")) == 0  # fmt: skip

    kept = imported(api, client, job["id"], body, partial=True)
    assert (kept["created"], kept["error_count"]) == (3, len(BAD_ROWS))
    assert [t.external_id for t in tasks_of(db_session, job["id"])] == [
        "item-0",
        "item-1",
        "item-2",
    ]


def test_undecodable_and_overlong_lines_are_row_errors(api, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    overlong = b'{"payload": {"t": "' + b"x" * import_rows.MAX_ROW_BYTES + b'"}}\n'
    body = b'{"payload": {"t": "caf\xe9"}}\n' + overlong + lines(items(1)).encode() + b"\xff\xfe\n"
    kept = imported(api, client, job["id"], body, partial=True)
    assert kept["created"] == 1
    assert [(e["row"], list(e["errors"])) for e in kept["errors"]] == [
        (1, ["_schema"]),
        (2, ["_schema"]),
        (4, ["_schema"]),
    ]
    assert "UTF-8" in kept["errors"][0]["errors"]["_schema"][0]
    assert "longer than" in kept["errors"][1]["errors"]["_schema"][0]


def test_the_error_list_is_capped_but_counted(api, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    body = '{"payload": 1}\n' * (imports.MAX_REPORTED_ERRORS + 500)
    refused = assert_problem(upload(api, client, job["id"], body), 422)
    assert refused["error_count"] == imports.MAX_REPORTED_ERRORS + 500
    assert len(refused["errors"]) == imports.MAX_REPORTED_ERRORS


def test_answers_are_checked_against_the_job_spec(api, db_session):
    client = api.signup("client")
    job = create_job(api, client, answer_spec={"type": "number", "min": 0, "max": 10})
    body = lines(
        [
            {"external_id": "ok", "payload": {}, "gold_answer": 3.5},
            {"external_id": "high", "payload": {}, "gold_answer": 11},
            {"external_id": "text", "payload": {}, "prelabel": {"answer": "3", "confidence": 0}},
        ]
    )
    kept = imported(api, client, job["id"], body, partial=True)
    assert kept["created"] == 1
    assert kept["errors"][0]["errors"] == {"gold_answer": ["Answer must be at most 10."]}
    assert kept["errors"][1]["errors"] == {
        "prelabel": {"answer": ["Answer must be a finite number."]}
    }


def test_bad_csv_rows_and_headers(api, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    body = (
        "external_id,url,gold_answer,prelabel_answer,prelabel_confidence,priority\n"
        "r1,u,,,,\n"
        "r2,u,horse,,,\n"
        "r3,u,,cat,,\n"
        "r4,u,,cat,lots,\n"
        "r5,u,,,,1.5\n"
        "r6,u\n"
        "r7,u,,,,,extra\n"
        "r8,nul\x00,,,,\n"
        "r9,u,,cat,0.9,-7\n"
    )
    kept = imported(api, client, job["id"], body, CSV, partial=True)
    assert kept["created"] == 2
    assert {e["row"]: sorted(e["errors"]) for e in kept["errors"]} == {
        2: ["gold_answer"],
        3: ["prelabel_confidence"],
        4: ["prelabel_confidence"],
        5: ["priority"],
        6: ["_schema"],
        7: ["_schema"],
        8: ["url"],
    }
    assert kept["errors"][1]["external_id"] == "r3"
    r9 = tasks_of(db_session, job["id"])[1]
    assert (r9.prelabel, r9.prelabel_confidence, r9.priority) == ("cat", 0.9, -7)

    for header in (
        "external_id,url,url\n",
        "external_id,,url\n",
        "external_id,priority\n",
        "external_id,payload,url\n",
    ):
        refused = assert_problem(upload(api, client, job["id"], header + "x,1,2\n", CSV), 422)
        assert "header" in refused["errors"], refused
    refused = assert_problem(
        upload(api, client, job["id"], 'external_id,payload\nq,{"a": 1\n', CSV), 422
    )
    assert refused["errors"][0]["errors"]["payload"][0].startswith("Not valid JSON: ")
    assert count_tasks(db_session, job["id"]) == 2


@pytest.fixture
def client_job(api):
    client = api.signup("client")
    return client, create_job(api, client)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.lists(
        st.one_of(
            st.binary(max_size=60),
            st.text(max_size=60).map(str.encode),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                lambda kids: (
                    st.lists(kids, max_size=3)
                    | st.dictionaries(
                        st.sampled_from(
                            ["payload", "external_id", "gold_answer", "prelabel", "priority", "x"]
                        )
                        | st.text(max_size=4),
                        kids,
                        max_size=4,
                    )
                ),
                max_leaves=8,
            ).map(lambda value: json.dumps(value).encode()),
        ),
        max_size=6,
    ),
    csv_body=st.booleans(),
)
def test_no_input_makes_the_import_fail_badly(api, client_job, body, csv_body):
    client, job = client_job
    response = upload(
        api, client, job["id"], b"\n".join(body), CSV if csv_body else NDJSON, partial=True
    )
    assert response.status_code in (200, 422), response.get_data(as_text=True)
    if response.status_code == 422:
        assert_problem(response, 422)


# --- the request ---------------------------------------------------------------------------


def test_wrong_media_types_are_refused(api, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    path = f"/api/v1/jobs/{job['id']}/tasks"
    assert_problem(api.post(path, client.token, json={"payload": {}}), 415)
    assert_problem(api.post(path, client.token, data="x", content_type="text/plain"), 415)
    assert_problem(api.post(path, client.token, data=lines(items(1))), 415)
    assert_problem(api.post(path, client.token), 415)  # no body, no type
    latin = f"{NDJSON}; charset=latin-1"
    assert_problem(api.post(path, client.token, data=lines(items(1)), content_type=latin), 415)
    assert count_tasks(db_session) == 0


def test_oversized_bodies_are_refused_whole(api, app, db_session, monkeypatch):
    monkeypatch.setattr(imports, "BATCH_SIZE", 10)  # batches are written before the 413
    client = api.signup("client")
    job = create_job(api, client)
    body = lines(items(50)).encode()
    monkeypatch.setattr(app.config["CROWDLINE"], "max_upload_bytes", len(body) - 1)
    # with a Content-Length
    too_large = assert_problem(upload(api, client, job["id"], body), 413)
    assert str(len(body) - 1) in too_large["detail"]
    # chunked: werkzeug would cut the stream at the limit and the import would look complete
    chunks = [body[i : i + 100] for i in range(0, len(body), 100)]
    assert_problem(upload_streamed(api, client, job["id"], chunks), 413)
    assert_problem(upload_streamed(api, client, job["id"], chunks, partial=True), 413)
    assert count_tasks(db_session) == 0
    # exactly at the limit is fine, chunked or not
    monkeypatch.setattr(app.config["CROWDLINE"], "max_upload_bytes", len(body))
    assert upload_streamed(api, client, job["id"], chunks).get_json()["created"] == 50
    assert imported(api, client, job["id"], body)["unchanged"] == 50


def test_a_unique_violation_is_a_conflict_to_retry(api, db_session, monkeypatch):
    """Should a row slip past the look-up (nothing in the app writes tasks beside imports,
    which take turns), the unique constraint refuses it and the import is a 409."""
    monkeypatch.setattr(imports, "BATCH_SIZE", 10)
    monkeypatch.setattr(imports._TaskImport, "_existing", lambda self, external_ids: {})
    client = api.signup("client")
    job = create_job(api, client)
    rows = items(30)
    rows[25] = rows[3]
    refused = assert_problem(upload(api, client, job["id"], lines(rows), partial=True), 409)
    assert "send the file again" in refused["detail"]
    assert count_tasks(db_session) == 0
    monkeypatch.undo()
    assert imported(api, client, job["id"], lines(items(30)))["created"] == 30


def test_other_tenants_and_the_wrong_scope_are_refused(api, db_session):
    owner = api.signup("client")
    other = api.signup("client")
    worker = api.signup("worker")
    job = create_job(api, owner)
    body = lines(items(2))
    assert_problem(upload(api, other, job["id"], body), 404)
    assert_problem(upload(api, worker, job["id"], body), 403)  # workers lack jobs:write
    assert_problem(upload(api, owner, 999_999, body), 404)
    reader = api.login(owner.email, scope="jobs:read")["access_token"]
    response = api.post(f"/api/v1/jobs/{job['id']}/tasks", reader, data=body, content_type=NDJSON)
    assert_problem(response, 403)
    no_token = api.post(f"/api/v1/jobs/{job['id']}/tasks", data=body, content_type=NDJSON)
    assert_problem(no_token, 401)
    assert count_tasks(db_session) == 0


def test_imports_follow_the_job_lifecycle(api, app, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    imported(api, client, job["id"], lines(items(2)))
    fund(api, client, job["id"], 10_000)
    assert api.post(f"/api/v1/jobs/{job['id']}/activate", client.token).status_code == 200
    assert imported(api, client, job["id"], lines(items(2, start=2)))["created"] == 2
    assert api.post(f"/api/v1/jobs/{job['id']}/pause", client.token).status_code == 200
    assert imported(api, client, job["id"], lines(items(2, start=4)))["created"] == 2
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel", client.token).status_code == 200
    refused = assert_problem(upload(api, client, job["id"], lines(items(1, start=9))), 409)
    assert "cancelled" in refused["detail"]
    assert count_tasks(db_session, job["id"]) == 6


def test_completed_jobs_take_no_tasks(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = create_job(api, client, redundancy={"min": 1, "max": 1, "target_confidence": 0.9})
    imported(api, client, job["id"], lines(items(1)))
    fund(api, client, job["id"], 10_000)
    api.post(f"/api/v1/jobs/{job['id']}/activate", client.token)
    worker = active_worker(api, admin)
    leased = lease(api, worker, job["id"]).get_json()
    api.post(f"/api/v1/assignments/{leased['id']}/submit", worker.token, json={"answer": "cat"})
    assert api.get(f"/api/v1/jobs/{job['id']}", client.token).get_json()["status"] == "completed"
    assert_problem(upload(api, client, job["id"], lines(items(1, start=1))), 409)
    assert count_tasks(db_session, job["id"]) == 1


# --- at scale, and in use ----------------------------------------------------------------------


def test_a_streamed_import_of_20000_rows(api, app, db_session, monkeypatch):
    monkeypatch.setattr(imports, "BATCH_SIZE", 1000)
    client = api.signup("client")
    job = create_job(api, client)
    total = 20_000
    written_while_streaming = []
    sent = []  # rows handed to the database (INSERT, or the open COPY)
    write = imports._TaskImport._write
    monkeypatch.setattr(
        imports._TaskImport,
        "_write",
        lambda run, batch: (sent.append(len(batch)), write(run, batch)),
    )

    def body():
        for start in range(0, total, 500):
            if start == 15_000:
                # the earlier rows went to the database while the rest of the body is unread
                written_while_streaming.append(sum(sent))
            rows = items(500, start=start)
            for row in rows[::7]:
                row["gold_answer"] = "cat"
            yield lines(rows).encode()

    result = upload_streamed(api, client, job["id"], body()).get_json()
    assert result == {"created": total, "unchanged": 0, "error_count": 0, "errors": []}
    assert written_while_streaming[0] >= 10_000  # (the body is read ahead a little)
    assert count_tasks(db_session, job["id"]) == total
    gold = db_session.scalar(
        select(func.count()).select_from(Task).where(Task.job_id == job["id"], Task.is_gold)
    )
    assert gold == sum(len(range(0, 500, 7)) for _ in range(0, total, 500))

    again = upload_streamed(api, client, job["id"], body(), partial=True).get_json()
    assert (again["created"], again["unchanged"]) == (0, total)


def test_imported_tasks_are_leasable_and_gold_never_leaks(api, app, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    job = create_job(api, client, gold_rate=0.5)
    rows = items(3)
    rows[0]["prelabel"] = {"answer": "dog", "confidence": 0.9}
    gold = [
        {"external_id": f"gold-{i}", "payload": {"image_url": f"g{i}.jpg"}, "gold_answer": "dog"}
        for i in range(3)
    ]
    imported(api, client, job["id"], lines(rows + gold))
    fund(api, client, job["id"], 10_000)
    assert api.post(f"/api/v1/jobs/{job['id']}/activate", client.token).status_code == 200
    # tasks imported into an active job are leasable at once
    imported(api, client, job["id"], lines(items(1, start=3)))

    worker = active_worker(api, admin)
    seen = []
    while (response := lease(api, worker, job["id"])).status_code == 201:
        body = response.get_json()
        assert "gold" not in json.dumps(body), body
        seen.append(body)
        api.post(f"/api/v1/assignments/{body['id']}/submit", worker.token, json={"answer": "dog"})
    assert len(seen) == 7
    payloads = {s["task"]["payload"]["image_url"] for s in seen}
    assert "https://example.org/3.jpg" in payloads and "g0.jpg" in payloads
    prelabelled = next(s for s in seen if s["task"]["payload"]["image_url"].endswith("/0.jpg"))
    assert prelabelled["task"]["prelabel"] == {"answer": "dog", "confidence": 0.9}


def test_concurrent_imports_of_one_file_create_each_task_once(api, app, db_session):
    client = api.signup("client")
    job = create_job(api, client)
    body = lines(items(3000))
    results = []

    def run():
        results.append(upload(api.__class__(app.test_client()), client, job["id"], body))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.status_code == 200 for r in results), [r.get_json() for r in results]
    bodies = [r.get_json() for r in results]
    assert sum(b["created"] for b in bodies) == 3000
    assert all(b["created"] + b["unchanged"] == 3000 for b in bodies)
    assert count_tasks(db_session, job["id"]) == 3000

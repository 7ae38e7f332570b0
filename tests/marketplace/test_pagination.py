"""Cursor pagination: rows added while a client pages are neither skipped nor repeated."""

from __future__ import annotations

import base64
import re

import pytest
from sqlalchemy import select

from marketplace.models import AuditEvent
from tests.helpers import assert_problem

ORGS = "/api/v1/organizations"
_LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _follow(api, token, url, *, between_pages=lambda page: None, page_size):
    """Fetch page after page through the Link header; returns every item id in the order seen."""
    seen: list[int] = []
    pages = 0
    while True:
        response = api.get(url, token)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert len(body["items"]) <= page_size
        seen.extend(item["id"] for item in body["items"])
        pages += 1
        assert pages < 100, "paging never ended"
        if body["next_cursor"] is None:
            assert "Link" not in response.headers
            return seen
        link = _LINK.match(response.headers["Link"])
        assert link, response.headers["Link"]
        assert f"cursor={body['next_cursor']}" in link["url"]
        between_pages(pages)
        url = link["url"]


def test_paging_audit_events_while_rows_are_added_sees_every_row_once_in_order(api, db_session):
    owner = api.signup("client", organization="Paged")
    other = api.signup("client", organization="Elsewhere")
    org_id, other_id = owner.organization["id"], other.organization["id"]
    for n in range(7):
        api.patch(f"{ORGS}/{org_id}", owner.token, json={"name": f"Paged {n}"})

    added = []

    def add_rows(page: int) -> None:
        # New rows of this org after every page, interleaved with another tenant's.
        api.patch(f"{ORGS}/{other_id}", other.token, json={"name": f"Else {page}"})
        for suffix in "ab":
            api.patch(f"{ORGS}/{org_id}", owner.token, json={"name": f"During {page}{suffix}"})
            added.append(page)

    seen = _follow(
        api,
        owner.token,
        f"{ORGS}/{org_id}/audit-events?limit=3",
        between_pages=add_rows,
        page_size=3,
    )
    expected = list(
        db_session.scalars(
            select(AuditEvent.id)
            .where(AuditEvent.organization_id == org_id)
            .order_by(AuditEvent.id)
        )
    )
    assert len(added) >= 8  # paging went on for several pages while rows arrived
    assert len(expected) == 1 + 7 + len(added)  # signed up, 7 renames, renames while paging
    assert seen == expected  # each exactly once, in id order, none of the other tenant's


def test_paging_members_while_members_join(api):
    owner = api.signup("client", organization="Crew")
    org_id = owner.organization["id"]
    joiners = [api.signup("client") for _ in range(5)]
    for person in joiners[:2]:
        api.post(f"{ORGS}/{org_id}/members", owner.token, json={"email": person.email})
    pending = iter(joiners[2:])

    def add_member(page: int) -> None:
        for person in (next(pending, None), next(pending, None)):
            if person is None:
                continue
            response = api.post(
                f"{ORGS}/{org_id}/members", owner.token, json={"email": person.email}
            )
            assert response.status_code == 201

    seen = _follow(
        api, owner.token, f"{ORGS}/{org_id}/members?limit=2", between_pages=add_member, page_size=2
    )
    everyone = api.get(f"{ORGS}/{org_id}/members?limit=200", owner.token).get_json()
    assert everyone["next_cursor"] is None
    assert seen == [m["id"] for m in everyone["items"]]
    assert len(seen) == 6


def test_the_next_link_keeps_the_filter(api):
    owner = api.signup("client")
    org_id = owner.organization["id"]
    for n in range(5):
        api.patch(f"{ORGS}/{org_id}", owner.token, json={"name": f"Renamed {n}"})
    response = api.get(
        f"{ORGS}/{org_id}/audit-events?action=organization.renamed&limit=2", owner.token
    )
    assert "action=organization.renamed" in response.headers["Link"]
    seen = _follow(
        api,
        owner.token,
        f"{ORGS}/{org_id}/audit-events?action=organization.renamed&limit=2",
        page_size=2,
    )
    assert len(seen) == 5


def test_a_full_last_page_ends_with_a_null_cursor(api):
    owner = api.signup("client")
    org_id = owner.organization["id"]
    api.patch(f"{ORGS}/{org_id}", owner.token, json={"name": "Two events"})
    response = api.get(f"{ORGS}/{org_id}/audit-events?limit=2", owner.token)
    body = response.get_json()
    assert len(body["items"]) == 2
    assert body["next_cursor"] is None
    assert "Link" not in response.headers


def test_a_cursor_past_the_end_is_an_empty_page(api):
    reader = api.signup("client", scope="org:read")
    beyond = _cursor(b'{"after": 1000000}')
    response = api.get(f"{ORGS}?cursor={beyond}", reader.token)
    assert response.get_json() == {"items": [], "next_cursor": None}


def test_default_and_maximum_page_sizes(api):
    owner = api.signup("client")
    org_id = owner.organization["id"]
    for n in range(51):
        api.patch(f"{ORGS}/{org_id}", owner.token, json={"name": f"N{n}"})
    default = api.get(f"{ORGS}/{org_id}/audit-events", owner.token).get_json()
    assert len(default["items"]) == 50 and default["next_cursor"]
    biggest = api.get(f"{ORGS}/{org_id}/audit-events?limit=200", owner.token).get_json()
    assert len(biggest["items"]) == 52 and biggest["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!not-base64!!!",
        "bm90IGpzb24",  # "not json"
        _cursor(b'{"before": 3}'),
        _cursor(b'{"after": "3"}'),
        _cursor(b'{"after": true}'),
        _cursor(b'{"after": 3.5}'),
        _cursor(b'{"after": -1}'),
        _cursor(b'{"after": 99999999999999999999}'),
        _cursor(b"[3]"),
        _cursor(b"3"),
        _cursor(b"\xff\xfe"),
        _cursor(b"[" * 120),
        "A" * 500,
        "%00",
        "",
    ],
)
def test_an_invalid_cursor_is_422_naming_cursor(api, cursor):
    owner = api.signup("client")
    org_id = owner.organization["id"]
    for path in (ORGS, f"{ORGS}/{org_id}/members", f"{ORGS}/{org_id}/audit-events"):
        response = api.get(f"{path}?cursor={cursor}&limit=3", owner.token)
        if cursor == "":
            assert response.status_code == 200  # an empty cursor is the first page
            continue
        assert_problem(response, 422, field="cursor")


@pytest.mark.parametrize("limit", ["0", "-1", "201", "abc", "1.5", "99999999999999999999", ""])
def test_a_limit_out_of_range_is_422_naming_limit(api, limit):
    owner = api.signup("client")
    org_id = owner.organization["id"]
    for path in (ORGS, f"{ORGS}/{org_id}/members", f"{ORGS}/{org_id}/audit-events"):
        assert_problem(api.get(f"{path}?limit={limit}", owner.token), 422, field="limit")


def test_unknown_query_parameters_are_ignored(api):
    owner = api.signup("client")
    assert api.get(f"{ORGS}?limit=1&utm_source=mail", owner.token).status_code == 200

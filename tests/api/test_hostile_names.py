"""Names hold any text but NUL, line breaks and control characters included, stored and returned
exactly; NUL is refused by name and changes nothing; and no log line, JSON or text, can be split
or forged by such a name."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from identity.app.organizations import Organizations
from identity.logs import JsonFormatter, TextFormatter
from identity.v1 import key_service_pb2, organization_service_pb2
from tests.api import test_bad_input
from tests.api.test_bad_input import World, refused, update_key, update_org, update_principal

world = test_bad_input.world  # the fixture: a platform admin, an organization, a key

LINE_BREAKING = ["\n", "\r", "\r\n", "\t", "\x1b[31m", "\x7f", "\x85", "\u2028", "\u2029", "\x01"]
# However odd: kept exactly as sent.
ODD_BUT_FINE = [
    "O'Brien; DROP TABLE keys; --",
    '<script>alert("x")</script>',
    "ключ 🔑 👩\u200d👩\u200d👧",
    "\u202eevil\u202c",
    "مفتاح الإنتاج",
    "back\\slash \\n",
    '{"level": "ERROR"}',
]


def name_calls(world: World) -> dict[str, Callable[[str], Any]]:
    """Each RPC field that takes a name or free text: field path -> a call sending ``value`` there."""
    admin, md = world.admin, world.md
    roomy = admin.create_org("Roomy", max_keys_per_service_account=100).id  # quotas stay out of it
    owner = admin.create_principal(roomy).id

    def create_key(**fields: Any) -> key_service_pb2.Key:
        return admin.create_key(roomy, owner, ["inventory:read"], **fields).key

    def create_org(name: str) -> str:
        request = organization_service_pb2.CreateOrganizationRequest(display_name=name)
        return admin.orgs.CreateOrganization(request, metadata=md).organization.display_name

    return {
        "organization display_name": create_org,
        "organization.display_name": lambda v: (
            update_org(world, ["display_name"], display_name=v)().organization.display_name
        ),
        "principal display_name": lambda v: admin.create_principal(world.org_id, name=v).display_name,
        "principal.display_name": lambda v: (
            update_principal(world, ["display_name"], display_name=v)().principal.display_name
        ),
        "key display_name": lambda v: create_key(display_name=v).display_name,
        "key description": lambda v: create_key(description=v).description,
        "key.display_name": lambda v: update_key(world, ["display_name"], display_name=v)().key.display_name,
        "key.description": lambda v: update_key(world, ["description"], description=v)().key.description,
    }


@pytest.fixture
def captured() -> Iterator[dict[str, io.StringIO]]:
    """What the service logs meanwhile, at INFO, in both formats."""
    streams = {"json": io.StringIO(), "text": io.StringIO()}
    handlers = []
    for name, formatter in (("json", JsonFormatter()), ("text", TextFormatter())):
        handler = logging.StreamHandler(streams[name])
        handler.setFormatter(formatter)
        handlers.append(handler)
    root = logging.getLogger("identity")
    level = root.level
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield streams
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(level)


TEXT_RECORD = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \d+ identity[.\w]* "
)


def assert_unforgeable(streams: dict[str, io.StringIO], hostile: list[str]) -> None:
    """Every JSON line is one object of a record; every text line starts a record or is indented."""
    json_lines = streams["json"].getvalue().split("\n")[:-1]
    text_lines = streams["text"].getvalue().split("\n")[:-1]
    assert json_lines and text_lines
    for line in json_lines:
        assert json.loads(line)["logger"].startswith("identity"), line
    records = [line for line in text_lines if not line.startswith("    ")]
    assert all(TEXT_RECORD.match(line) for line in records), records
    assert len(records) == len(json_lines)  # the same records, none split, none forged
    logged = streams["json"].getvalue() + streams["text"].getvalue()
    for char in set("".join(hostile)) - {"\n"}:  # LF ends each record: the line checks above cover it
        assert char.isprintable() or char not in logged, repr(char)


def test_names_with_line_breaks_or_control_characters_are_stored_exactly_and_logged_safely(
    world: World, captured: dict[str, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    for field, send in name_calls(world).items():
        for odd in LINE_BREAKING:
            assert send(f"evil{odd}name") == f"evil{odd}name", (field, odd)

    def broken(*_: Any, **__: Any) -> Any:  # a failure whose message carries the name
        raise ValueError(f"cannot store {''.join(LINE_BREAKING)}")

    monkeypatch.setattr(Organizations, "create", broken)
    request = organization_service_pb2.CreateOrganizationRequest(display_name="".join(LINE_BREAKING))
    with pytest.raises(Exception, match="internal error"):
        world.admin.orgs.CreateOrganization(request, metadata=world.md)
    assert_unforgeable(captured, LINE_BREAKING)


def test_a_name_with_a_nul_is_refused_by_name(world: World) -> None:
    for field, send in name_calls(world).items():
        refused(world, partial(send, "evil\x00name"), field.split(" ")[-1], field)


def test_odd_but_printable_names_are_stored_and_returned_exactly(world: World) -> None:
    for field, send in name_calls(world).items():
        for name in ODD_BUT_FINE:
            assert send(name) == name, (field, name)
    listed = world.admin.orgs.ListOrganizations(
        organization_service_pb2.ListOrganizationsRequest(page_size=1000), metadata=world.md
    )
    assert set(ODD_BUT_FINE) <= {o.display_name for o in listed.organizations}


def test_an_unexpected_failure_carrying_a_name_cannot_forge_a_log_line(
    world: World, captured: dict[str, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    forged = '\n2026-01-01 00:00:00,000 INFO 1 identity.rpc rpc method=forged\n{"logger": "identity.rpc"}'

    def broken(*_: Any, **__: Any) -> Any:
        raise ValueError(f"cannot store {forged}\u2028\x85")

    monkeypatch.setattr(Organizations, "create", broken)
    request = organization_service_pb2.CreateOrganizationRequest(display_name="fine")
    with pytest.raises(Exception, match="internal error"):
        world.admin.orgs.CreateOrganization(request, metadata=world.md)
    assert "cannot store" in captured["text"].getvalue()
    assert_unforgeable(captured, [forged, "\u2028\x85"])

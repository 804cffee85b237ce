"""Log lines: JSON objects that no value can split, text lines with their fields, and a per-RPC
line that costs nothing (not even the peer's address) when INFO is off."""

from __future__ import annotations

import json
import logging
import sys
from types import SimpleNamespace

import grpc
import pytest

from identity.logs import JsonFormatter, TextFormatter
from identity.metrics.rpcs import RpcTally
from identity.services.interceptor import IdentityInterceptor
from identity.v1 import authorization_service_pb2

CHECK = "/identity.v1.AuthorizationService/Check"


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("identity.test", logging.WARNING, __file__, 1, message, args, None)


def test_a_json_line_holds_time_level_logger_message_and_fields() -> None:
    made = record("refused %s", "twice")
    made.fields = {"method": CHECK, "code": "OK", "duration_ms": 0.25, "level": "forged"}
    line = json.loads(JsonFormatter().format(made))
    assert line["level"] == "WARNING"  # a field cannot pass for the record's own
    assert (line["logger"], line["message"], line["method"], line["duration_ms"]) == (
        "identity.test",
        "refused twice",
        CHECK,
        0.25,
    )
    assert line["time"].endswith("+00:00") and isinstance(line["pid"], int)


def test_no_value_can_split_or_forge_a_json_line() -> None:
    hostile = 'a\nb\r{"level": "ERROR"}\x1b[31m\u2028\x00'
    made = record("%s", hostile)
    made.fields = {"peer": hostile}
    rendered = JsonFormatter().format(made)
    assert (
        "\n" not in rendered and "\r" not in rendered and "\x1b" not in rendered and "\u2028" not in rendered
    )
    line = json.loads(rendered)
    assert line["message"] == hostile and line["peer"] == hostile and line["level"] == "WARNING"


def test_an_exception_stays_on_its_json_line() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        made = logging.LogRecord("identity", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    rendered = JsonFormatter().format(made)
    assert "\n" not in rendered
    assert "ValueError: broken" in json.loads(rendered)["exception"]


def test_a_text_line_appends_the_fields() -> None:
    made = record("rpc")
    made.fields = {"method": CHECK, "code": "OK"}
    assert (
        TextFormatter()
        .format(made)
        .endswith(f"WARNING {made.process} identity.test rpc method={CHECK} code=OK")
    )


def test_no_value_can_split_or_forge_a_text_line() -> None:
    hostile = "a\nb\r2026-01-01 00:00:00,000 ERROR 1 identity.rpc forged\x1b[31m\u2028\x85\x00\\n"
    try:
        raise ValueError(hostile)
    except ValueError:
        made = logging.LogRecord("identity", logging.ERROR, __file__, 1, "%s", (hostile,), sys.exc_info())
    made.fields = {"peer": hostile}
    head, *traceback = TextFormatter().format(made).split("\n")
    assert head.isprintable() and head.count("forged") == 2  # message and field, escaped in place
    assert "a\\nb\\r2026" in head and "\\x1b[31m\\u2028\\x85\\x00\\\\n" in head
    assert traceback and all(line.startswith("    ") and line.isprintable() for line in traceback)


class Context:
    """What the interceptor asks of a servicer context here: the peer, counted."""

    def __init__(self) -> None:
        self.peers = 0

    def peer(self) -> str:
        self.peers += 1
        return "ipv4:10.1.2.3:5000"


def serve_check(rpcs: RpcTally | None) -> Context:
    """One Check through the interceptor (an unauthenticated RPC), answered by a stand-in handler."""
    handler = grpc.unary_unary_rpc_method_handler(lambda _request, _context: "answered")
    interceptor = IdentityInterceptor(None, lambda *_: None, rpcs)  # type: ignore[arg-type]
    wrapped = interceptor.intercept_service(lambda _details: handler, SimpleNamespace(method=CHECK))
    context = Context()
    assert wrapped.unary_unary(authorization_service_pb2.CheckRequest(), context) == "answered"
    return context


def test_the_rpc_line_is_written_at_info_with_the_peer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="identity.rpc")
    context = serve_check(None)
    assert context.peers == 1
    [line] = [r for r in caplog.records if r.name == "identity.rpc"]
    fields = line.fields  # type: ignore[attr-defined]
    assert {k: fields[k] for k in ("method", "code", "reason", "peer", "principal_id", "key_id")} == {
        "method": CHECK,
        "code": "OK",
        "reason": "",
        "peer": "ipv4:10.1.2.3:5000",
        "principal_id": "",
        "key_id": "",
    }


def test_above_info_the_rpc_is_counted_but_neither_logged_nor_its_peer_fetched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="identity.rpc")
    rpcs = RpcTally()
    context = serve_check(rpcs)
    assert context.peers == 0
    assert not [r for r in caplog.records if r.name == "identity.rpc"]
    assert rpcs.totals().calls == {(CHECK, "OK"): 1}

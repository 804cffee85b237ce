"""Log lines for people (text) and for machines (one JSON object a line).

A record may carry structured fields as ``extra={"fields": {...}}``: JSON lines hold them as
keys of their own, text lines append them as ``name=value``. JSON lines escape every control
character and every non-ASCII one (line separators included), text lines every control character
and line separator, so no value can split or forge a line.
Nothing here filters secrets: callers never log one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from identity.domain.validation import escape_controls

TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s %(message)s"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record was logged with (none for a plain message)."""
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, pid, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for name, value in fields_of(record).items():
            line.setdefault(name, value)  # never let a field pass for the time, level or message
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    r"""``time LEVEL pid logger message name=value ...``, then any traceback on indented lines.

    Control characters and line separators in the message and fields are escaped (``\n``), and
    every traceback line is indented, so no value can split a record or start one of its own.
    """

    def __init__(self) -> None:
        """Use :data:`TEXT_FORMAT`."""
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The message line with the record's fields appended."""
        text = super().formatMessage(record)
        return escape_controls(
            text + "".join(f" {name}={value}" for name, value in fields_of(record).items())
        )

    def formatException(self, ei: Any) -> str:
        """The traceback, each line indented."""
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        """The stack, each line indented."""
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("    " + escape_controls(line) for line in text.splitlines())


def configure_logging(level: str, log_format: str) -> None:
    """Send every record at ``level`` or above to stderr, as ``json`` or ``text`` lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)

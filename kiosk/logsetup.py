"""Local structured logging for the daemon: one line per record, ``key=value`` fields, redacted.

journald stores stderr lines; ``extra=`` fields become ``key=value`` pairs after the message, so
``journalctl -u sigkiosk | grep event=decision`` works. The ``RedactingFilter`` of
``kiosk.logging_mqtt`` runs first, on the handler, so keys, tokens and pen data cannot reach the
journal even by mistake (the MQTT handler redacts the same way).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TextIO

from kiosk.logging_mqtt import _STANDARD_ATTRS, RedactingFilter


class StructuredFormatter(logging.Formatter):
    def __init__(self, with_time: bool = True) -> None:
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}
        parts = []
        if self.with_time:
            parts.append(self.formatTime(record, "%Y-%m-%dT%H:%M:%S"))
        parts += [record.levelname, f"{record.name}:", record.getMessage()]
        for k, v in fields.items():
            if v is None:
                continue
            s = v if isinstance(v, (int, float)) else json.dumps(v) if not isinstance(v, str) or " " in v or not v else v
            parts.append(f"{k}={s}")
        return " ".join(str(p) for p in parts)


def setup_logging(level: int = logging.INFO, stream: TextIO | None = None, with_time: bool = True) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(StructuredFormatter(with_time))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    return handler

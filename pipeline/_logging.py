"""Logging: klog-like text by default (as aws-node and the Go helper write), JSON on request.

The component ID travels as a structured field (``extra={"component": ...}``), added for every
record by each component's logger adapter.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import MutableMapping
from typing import Any

from ._component import ComponentID, Kind, log_tag
from ._redact import redact, register_secret

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    # aws-node's and the Go helper's most severe level; this pipeline never logs at fatal, and the
    # closest level that still shows why it stops is error.
    "fatal": logging.ERROR,
}
_KLOG_LETTER = {
    logging.DEBUG: "D",
    logging.INFO: "I",
    logging.WARNING: "W",
    logging.ERROR: "E",
    logging.CRITICAL: "F",
}


class KlogFormatter(logging.Formatter):
    """``I1127 10:00:30.123456 [receiver/prometheus] message`` (klog's header, then the
    component's kind and ID in brackets)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%m%d %H:%M:%S", time.gmtime(record.created))
        micros = int((record.created % 1) * 1_000_000)
        component = getattr(record, "component", "")
        where = f" [{component}]" if component else ""
        text = (
            f"{_KLOG_LETTER.get(record.levelno, 'I')}{ts}.{micros:06d}{where} {record.getMessage()}"
        )
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int((record.created % 1) * 1000):03d}Z",
            "level": record.levelname.lower(),
            "msg": redact(record.getMessage()),
        }
        component = getattr(record, "component", "")
        if component:
            data["component"] = component
        if record.exc_info:
            data["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(data)


def resolve_level(*names: str | None) -> int:
    """The first of ``names`` (in the caller's order of precedence) that is a level, else info."""
    for name in names:
        if name and name.lower() in LEVELS:
            return LEVELS[name.lower()]
    return logging.INFO


def setup_logging(level: int, fmt: str = "text") -> None:
    """Log to stderr; every line is redacted (pipeline/_redact.py), starting with the AWS secrets
    of the environment."""
    register_secret(os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN"))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KlogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party libraries are chatty at info; keep them to warnings.
    for noisy in ("botocore", "urllib3", "kubernetes", "werkzeug", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


class _ComponentAdapter(logging.LoggerAdapter[logging.Logger]):
    """Adds the component's tag to every record, keeping any other ``extra`` the call gives
    (the stdlib adapter would replace them)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(kwargs.get("extra") or {}), **(self.extra or {})}
        return msg, kwargs


def component_logger(cid: ComponentID, kind: Kind) -> logging.LoggerAdapter[logging.Logger]:
    base = logging.getLogger(f"cni_pipeline.{kind.plural}.{cid.type}")
    return _ComponentAdapter(base, {"component": log_tag(kind, cid)})

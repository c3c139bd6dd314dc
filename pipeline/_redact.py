"""Keeping secrets out of everything the process writes: log lines (both formats, tracebacks
included) and the health messages /readyz shows.

Two nets, because neither alone is enough. By pattern: credentials in the forms they travel in
(an ``Authorization`` header or a bearer token, AWS's ``X-Amz-Security-Token`` and signatures, a
PEM private key, ``secret``/``token``/``password`` keys with a value), whatever holds them. By
value: the secrets this process holds (AWS keys and session tokens, Kubernetes tokens), registered
by the code that loads them with :func:`register_secret`, so that an error body that quotes one
bare (a server echoing what it was sent) is caught too.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

REDACTED = "[REDACTED]"
#: Shorter values are not registered: replacing them could garble unrelated text.
_MIN_SECRET = 8

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
                re.DOTALL), REDACTED),
    (re.compile(r"(?i)\b(authorization[\"']?\s*[=:]\s*[\"']?)"
                r"(?:(?:bearer|basic|aws4-hmac-sha256)\s+)?[^\s\"'<>]+(?:,\s*[\w-]+=[^\s,\"'<>]+)*"),
     rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(x-amz-security-token[\"']?\s*[=:]\s*[\"']?)[^\s&,;\"'<>]+"),
     rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b((?:x-amz-)?signature[\"']?\s*[=:]\s*[\"']?)[0-9a-f]{16,}"),
     rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b((?:aws_)?(?:secret_access_key|session_token|secret|password|passwd|"
                r"client[-_]key[-_]data|token)[\"']?\s*[=:]\s*[\"']?)[^\s,;&\"'<>]{8,}"),
     rf"\1{REDACTED}"),
)

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(*values: str | None) -> None:
    """Never write these values out (a credential the process has loaded). Thread-safe; cheap
    enough to call whenever credentials are (re)loaded."""
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET)


def registered_secrets() -> Iterable[str]:
    with _lock:
        return sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str) -> str:
    """``text`` without any registered secret or credential-shaped value."""
    if not text:
        return text
    for value in registered_secrets():
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text

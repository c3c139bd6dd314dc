"""pipeline.redact: credentials by pattern and registered secrets by value; ordinary text (the
lines the pipeline logs every cycle) unchanged."""

from __future__ import annotations

import logging

import pytest

from pipeline import redact, register_secret
from pipeline._logging import JsonFormatter, KlogFormatter


@pytest.mark.parametrize("text", [
    "Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6Ik1hcmtlciJ9.payload.sig",
    "authorization=AWS4-HMAC-SHA256 Credential=AKIA/20261204/us-west-2/monitoring/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0123456789abcdef0123456789abcdef",
    "X-Amz-Security-Token=IQoJb3JpZ2luX2VjEMarkerMarkerMarker",
    "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=0123456789abcdef0123456789abcdef&x=1",
    '{"aws_secret_access_key": "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"}',
    "client-key-data: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t",
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----",
])
def test_credential_shapes_are_redacted(text: str) -> None:
    out = redact(text)
    assert "[REDACTED]" in out
    for secret in ("eyJhbGci", "0123456789abcdef0123", "IQoJb3Jp", "wJalrXUt", "LS0tLS1C",
                   "MIGHAgEA"):
        assert secret not in out


def test_a_registered_secret_is_redacted_anywhere() -> None:
    register_secret("bare-marker-value-42", None, "short")
    assert redact("the server said: bare-marker-value-42 is wrong") == (
        "the server said: [REDACTED] is wrong")
    assert redact("short stays") == "short stays"  # too short to be registered


@pytest.mark.parametrize("text", [
    "cycle 12 @2026-11-27T10:00:30Z: targets discovered=20 scraped=19 failed=1 (timeout=1)",
    "target 10.0.1.5:61678 (pod kube-system/aws-node-x2k9p on node ip-10-0-1-5) failing: timeout",
    "gave up sending 20 datapoints: refused (403): AccessDenied",
])
def test_ordinary_lines_are_unchanged(text: str) -> None:
    assert redact(text) == text


def test_both_log_formats_redact_messages_and_tracebacks() -> None:
    register_secret("traceback-marker-secret")
    try:
        raise RuntimeError("failed with traceback-marker-secret")
    except RuntimeError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "token: %s", (
        "traceback-marker-secret",), exc_info)
    for formatter in (KlogFormatter(), JsonFormatter()):
        assert "traceback-marker-secret" not in formatter.format(record)

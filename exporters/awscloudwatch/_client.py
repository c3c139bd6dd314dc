"""The boto3 CloudWatch client, and botocore's errors mapped to the pipeline's export errors.

botocore retries a few times by itself (3 attempts in "standard" mode) with short delays; that
does not outlast minutes of throttling, and stacked on our own retries it would multiply attempts
and hide ambiguous re-sends from our count. So the client makes exactly one attempt per call and
:mod:`pipeline.exporterhelper` does all the retrying (with the batch kept in its queue).
"""

from __future__ import annotations

import re
from typing import Any

from pipeline import PermanentExportError, RetryableExportError, ThrottledError, register_secret
from pipeline.exporterhelper import AmbiguousExportError

from .config import CloudWatchExporterConfig

#: Error codes CloudWatch (and the AWS front end before it) use for "slow down".
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "SlowDown", "RequestThrottled",
    "PriorRequestNotComplete", "EC2ThrottledException",
})
#: Codes that mean a transient fault on the server's side.
TRANSIENT_CODES = frozenset({
    "InternalFailure", "InternalServiceError", "InternalServiceFault", "InternalError",
    "ServiceUnavailable", "ServiceUnavailableException", "RequestTimeout",
    "RequestTimeoutException", "IDPCommunicationError",
})
#: Credential and signature problems that a token refresh may fix (IRSA tokens rotate).
REFRESHABLE_AUTH_CODES = frozenset({
    "ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId",
    "SignatureDoesNotMatch",
})
ACCESS_DENIED_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "NotAuthorized",
})

_PRINCIPAL = re.compile(r"(arn:aws[\w-]*:(?:iam|sts)::\d{12}:[\w+=,.@/:-]+)")


def make_client(config: CloudWatchExporterConfig, region: str) -> Any:
    """A CloudWatch client: one attempt per call, gzip on, boto3's credential chain."""
    import boto3
    from botocore.config import Config

    botocore_config = Config(
        region_name=region,
        connect_timeout=float(config.connect_timeout),
        read_timeout=float(config.read_timeout),
        retries={"total_max_attempts": 1, "mode": "standard"},
        # PutMetricData bodies above botocore's threshold (10 KiB) are sent gzip'd.
        disable_request_compression=not config.compression,
        max_pool_connections=max(10, config.max_concurrent_requests),
        user_agent_extra="cni-pipeline",
    )
    session = boto3.session.Session()
    client = session.client(
        "cloudwatch", endpoint_url=config.endpoint_url or None, config=botocore_config
    )
    # The session token travels in every request (and a refreshed one, with IRSA, from then on):
    # registered as it is sent, so that an error quoting it is never written out.
    client.meta.events.register("before-send.cloudwatch", _register_session_token)
    return client


def _register_session_token(request: Any, **_: Any) -> None:
    token = request.headers.get("X-Amz-Security-Token")
    if token:
        register_secret(token.decode() if isinstance(token, bytes) else str(token))


def principal_of(message: str) -> str:
    """The IAM principal an AccessDenied message names (AWS puts its ARN in the message)."""
    match = _PRINCIPAL.search(message)
    return match.group(1).rstrip(".") if match else ""


def _retry_after(response: dict[str, Any]) -> float | None:
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def map_client_error(exc: Any, namespace: str) -> Exception:
    """The pipeline error for a botocore ``ClientError`` (the service answered)."""
    response: dict[str, Any] = getattr(exc, "response", {}) or {}
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")) or str(exc)
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in THROTTLING_CODES or status == 429:
        return ThrottledError(f"throttled ({code or status}): {message}", _retry_after(response))
    if code in ACCESS_DENIED_CODES:
        principal = principal_of(message) or "this pod's AWS principal (see `aws sts " \
            "get-caller-identity`)"
        return PermanentExportError(
            f"AccessDenied: {principal} lacks permission cloudwatch:PutMetricData (namespace "
            f"{namespace!r}); grant it with the IAM policy in the README's awscloudwatch section. "
            f"CloudWatch said: {message}"
        )
    if code in REFRESHABLE_AUTH_CODES:
        return RetryableExportError(f"{code}: {message} (credentials may refresh)")
    if code in TRANSIENT_CODES or status >= 500:
        return RetryableExportError(f"server error ({code or status}): {message}")
    return PermanentExportError(f"refused ({code or status}): {message}")


def map_error(exc: Exception, namespace: str) -> Exception:
    """The pipeline error for anything boto3 raised during one PutMetricData call.

    Whether the request may have reached CloudWatch decides ambiguity: a refused or timed-out
    *connect* is safe to re-send; a read timeout or a connection closed after sending is not
    (CloudWatch may have stored the data), so it is an :class:`AmbiguousExportError`.
    """
    from botocore import exceptions as be

    if isinstance(exc, be.ClientError):
        return map_client_error(exc, namespace)
    if isinstance(exc, be.ConnectTimeoutError | be.EndpointConnectionError):
        return RetryableExportError(f"cannot connect: {exc}")
    if isinstance(exc, be.ReadTimeoutError | be.ConnectionClosedError):
        return AmbiguousExportError(f"no answer after sending: {exc}")
    if isinstance(exc, be.NoCredentialsError | be.PartialCredentialsError):
        return RetryableExportError(
            f"{exc}: give the pod credentials (IRSA, EKS Pod Identity or an instance profile)"
        )
    if isinstance(exc, be.ParamValidationError):
        return PermanentExportError(f"invalid request: {exc}")
    if isinstance(exc, be.HTTPClientError):
        return AmbiguousExportError(f"HTTP failure: {exc}")
    if isinstance(exc, be.BotoCoreError | OSError):
        return RetryableExportError(f"{type(exc).__name__}: {exc}")
    return exc

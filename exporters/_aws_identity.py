"""Where an AWS exporter runs: its region and its cluster's ID, found as the Go helper finds them.

- Region: config, else ``AWS_REGION`` (then ``AWS_DEFAULT_REGION``, as boto3 reads it), else the
  instance metadata service (IMDSv2).
- Cluster ID: config, else ``AWS_CLUSTER_ID``, else a tag of this EC2 instance
  (``eks:cluster-name``, then ``CLUSTER_ID``, then ``Name``: the Go helper looks at the last two),
  else ``k8s-cluster``.

Every source that fails is logged and the next one is tried; nothing here raises for a missing
answer. The calls block (urllib, boto3) and use short timeouts: run them through
``asyncio.to_thread`` from a component's ``start``.

IMDS is reached as botocore reaches it: ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` overrides the
endpoint (``AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`` picks the IPv6 one) and
``AWS_EC2_METADATA_DISABLED=true`` turns it off (tests and the ``validate`` command must not touch
the network). The EC2 client honours boto3's own ``AWS_ENDPOINT_URL_EC2`` / ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CLUSTER_TAG_KEYS",
    "DEFAULT_CLUSTER_ID",
    "ImdsClient",
    "ImdsError",
    "cluster_id_from_tags",
    "resolve_cluster_id",
    "resolve_region",
]

DEFAULT_CLUSTER_ID = "k8s-cluster"
#: Instance tags that name the cluster, in order of preference.
CLUSTER_TAG_KEYS = ("eks:cluster-name", "CLUSTER_ID", "Name")

_IMDS_IPV4 = "http://169.254.169.254/"
_IMDS_IPV6 = "http://[fd00:ec2::254]/"
_TOKEN_TTL = "21600"

_log = logging.getLogger("cni_pipeline.aws_identity")

Logger = logging.Logger | logging.LoggerAdapter[Any]


class ImdsError(Exception):
    """The instance metadata service did not answer, or refused (``status``: HTTP status, or 0
    when there was no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ImdsClient:
    """A minimal IMDSv2 client: fetch a session token, then GET paths with it.

    Hand-written rather than botocore's ``IMDSFetcher`` (in ``botocore.utils``, not a public API)
    so the endpoint, timeouts and attempts are ours and no HTTP proxy is ever used for it.
    """

    endpoint: str = _IMDS_IPV4
    timeout: float = 1.0
    attempts: int = 2

    def __post_init__(self) -> None:
        self.endpoint = self.endpoint.rstrip("/") + "/"
        # IMDS is link-local: never route it through HTTP(S)_PROXY.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._token: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ImdsClient | None:
        """The client botocore would use, or ``None`` when IMDS is disabled."""
        env = os.environ if environ is None else environ
        if env.get("AWS_EC2_METADATA_DISABLED", "false").strip().lower() == "true":
            return None
        endpoint = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "").strip()
        if not endpoint:
            mode = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv4").strip().lower()
            endpoint = _IMDS_IPV6 if mode == "ipv6" else _IMDS_IPV4
        return cls(endpoint=endpoint)

    def _request(self, method: str, path: str, headers: dict[str, str]) -> str:
        url = self.endpoint + path.lstrip("/")
        last: Exception | None = None
        for _ in range(max(1, self.attempts)):
            request = urllib.request.Request(url, method=method, headers=headers)
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    return str(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                if exc.code < 500:  # 401/403/404 will not change on a retry
                    raise ImdsError(f"{method} {url}: HTTP {exc.code}", exc.code) from exc
                last = exc
            except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
                last = exc
        raise ImdsError(f"{method} {url}: {last}") from last

    def token(self) -> str:
        if self._token is None:
            self._token = self._request(
                "PUT", "latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": _TOKEN_TTL}
            )
        return self._token

    def get(self, path: str) -> str:
        """GET a metadata path (``latest/meta-data/...``) with an IMDSv2 token."""
        return self._request("GET", path, {"X-aws-ec2-metadata-token": self.token()}).strip()

    def region(self) -> str:
        try:
            return self.get("latest/meta-data/placement/region")
        except ImdsError as exc:
            if exc.status != 404:
                raise
            # Older IMDS builds lack placement/region; the identity document always has it.
            document = json.loads(self.get("latest/dynamic/instance-identity/document"))
            return str(document["region"])

    def instance_id(self) -> str:
        return self.get("latest/meta-data/instance-id")


def _imds(imds: ImdsClient | None, environ: Mapping[str, str] | None) -> ImdsClient | None:
    return imds if imds is not None else ImdsClient.from_environ(environ)


def resolve_region(
    configured: str,
    *,
    imds: ImdsClient | None = None,
    environ: Mapping[str, str] | None = None,
    logger: Logger | None = None,
) -> str:
    """The AWS region to use, or ``""`` when no source knows it (the caller decides what then).

    ``imds`` replaces the client built from the environment (``environ``, default
    ``os.environ``).
    """
    log = logger or _log
    env = os.environ if environ is None else environ
    if configured.strip():
        return configured.strip()
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if env.get(var, "").strip():
            return env[var].strip()
    client = _imds(imds, environ)
    if client is None:
        log.info("region: not configured, AWS_REGION unset, and IMDS is disabled")
        return ""
    try:
        region = client.region()
    except (ImdsError, ValueError, KeyError) as exc:
        log.warning("region: not configured, AWS_REGION unset, and IMDS failed: %s", exc)
        return ""
    log.info("region %s from the instance metadata service", region)
    return region


def _default_ec2_client(region: str) -> Any:
    """boto3's EC2 client with short timeouts; endpoint from AWS_ENDPOINT_URL[_EC2] if set."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 2, "mode": "standard"}
    )
    return boto3.client("ec2", region_name=region, config=config)


def cluster_id_from_tags(tags: Mapping[str, str]) -> str:
    """The cluster ID among an instance's tags, by :data:`CLUSTER_TAG_KEYS` order, or ``""``."""
    for key in CLUSTER_TAG_KEYS:
        value = tags.get(key, "").strip()
        if value:
            return value
    return ""


def _instance_tags(ec2: Any, instance_id: str) -> dict[str, str]:
    """The cluster-naming tags of one instance (DescribeTags needs only ec2:DescribeTags)."""
    response = ec2.describe_tags(
        Filters=[
            {"Name": "resource-id", "Values": [instance_id]},
            {"Name": "key", "Values": list(CLUSTER_TAG_KEYS)},
        ]
    )
    return {tag["Key"]: tag.get("Value", "") for tag in response.get("Tags", [])}


def resolve_cluster_id(
    configured: str,
    *,
    region: str,
    imds: ImdsClient | None = None,
    ec2_client: Callable[[str], Any] | None = None,
    environ: Mapping[str, str] | None = None,
    logger: Logger | None = None,
) -> str:
    """The cluster ID: config, ``AWS_CLUSTER_ID``, this instance's EC2 tags, else ``k8s-cluster``.

    ``ec2_client(region)`` builds the EC2 client (default: boto3's, default credential chain);
    ``imds`` replaces the metadata client built from ``environ``.
    """
    log = logger or _log
    env = os.environ if environ is None else environ
    if configured.strip():
        return configured.strip()
    if env.get("AWS_CLUSTER_ID", "").strip():
        return env["AWS_CLUSTER_ID"].strip()
    found = _cluster_id_from_instance(region, _imds(imds, environ), ec2_client, log)
    if found:
        return found
    log.info("cluster ID: using the default %r", DEFAULT_CLUSTER_ID)
    return DEFAULT_CLUSTER_ID


def _cluster_id_from_instance(
    region: str,
    imds: ImdsClient | None,
    ec2_client: Callable[[str], Any] | None,
    log: Logger,
) -> str:
    if imds is None:
        log.info("cluster ID: not configured, AWS_CLUSTER_ID unset, and IMDS is disabled")
        return ""
    try:
        instance_id = imds.instance_id()
    except ImdsError as exc:
        log.warning("cluster ID: cannot read this instance's ID from IMDS: %s", exc)
        return ""
    if not region:
        log.warning("cluster ID: no region known, so the tags of %s cannot be read", instance_id)
        return ""
    try:
        ec2 = (ec2_client or _default_ec2_client)(region)
        tags = _instance_tags(ec2, instance_id)
    except Exception as exc:  # noqa: BLE001 - botocore's errors are many; each falls through
        log.warning(
            "cluster ID: cannot read the tags of %s (needs ec2:DescribeTags): %s", instance_id, exc
        )
        return ""
    found = cluster_id_from_tags(tags)
    if found:
        key = next(k for k in CLUSTER_TAG_KEYS if tags.get(k, "").strip() == found)
        log.info("cluster ID %s from tag %s of instance %s", found, key, instance_id)
    else:
        log.info("cluster ID: instance %s has none of the tags %s", instance_id,
                 ", ".join(CLUSTER_TAG_KEYS))
    return found

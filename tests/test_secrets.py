"""No secret in any log line, error message or self-metric, at any level, debug included.

Real ``cni-pipeline`` processes run at debug level (text, then JSON logs) with marker secrets
planted everywhere one could come from: the bearer token of a kubeconfig, a kubeconfig's client
key, AWS secret key and session token in the environment. Every place that answers them is made to
answer with an error that echoes what it was sent: the test API server refuses the pod list, the
pod proxy scrapes and the Lease with 401/403 bodies quoting the request's Authorization header;
a CloudWatch endpoint answers 403 quoting the request's Authorization and X-Amz-Security-Token
headers. Everything the processes wrote, and their /metrics and /readyz pages, must hold none of
the markers (nor their base64 forms). Each path is checked to have really run (the servers saw the
secrets, the log has the errors), so the test fails if a path goes quiet rather than clean.

Also: a kubeconfig with ``insecure-skip-tls-verify`` is warned about at start.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simfleet import FleetProcess
from tests.support.kube_apiserver import KubeAPIServer, RequestRecord, _APIError, status_body
from tests.support.pipeline_process import (
    Replica,
    eventually,
    free_port,
    kill_survivors,
    start_pipeline,
)

TOKEN = "kubetoken-MARKER-7f3a9c51d2e8"
SECRET_KEY = "awssecret-MARKER-b1c2d3e4f5a6"
SESSION_TOKEN = "awssession-MARKER-9d8c7b6a5f4e"
CONFIG = """\
receivers:
  prometheus:
    scrape_interval: 1s
    scrape_timeout: 900ms
    kubernetes_sd:
      mode: apiserver_proxy
processors:
  cni_aggregate: {{}}
exporters:
  awscloudwatch:
    endpoint_url: http://127.0.0.1:{cw_port}
    region: us-west-2
    cluster_id: secrets
    flush_interval: 1s
    retry_on_failure: {{initial_interval: 100ms, max_interval: 200ms}}
service:
  telemetry: {{endpoint: "127.0.0.1:{port}", log_format: {log_format}}}
  leader_election: {{lease_duration: 3s, renew_deadline: 2s, retry_period: 500ms}}
  pipelines:
    metrics: {{receivers: [prometheus], processors: [cni_aggregate], exporters: [awscloudwatch]}}
"""


class EchoingCloudWatch:
    """Answers every request 403, quoting the credentials it was sent (as a careless or hostile
    endpoint might), and keeps the headers it saw."""

    def __init__(self) -> None:
        seen = self.seen = []  # type: list[dict[str, str]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers.items())
                seen.append(headers)
                body = (
                    "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>"
                    f"not authorized: Authorization={headers.get('Authorization')} "
                    f"X-Amz-Security-Token={headers.get('X-Amz-Security-Token')}</Message></Error>"
                    "<RequestId>1</RequestId></ErrorResponse>").encode()
                self.send_response(403)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def client_key_and_cert() -> tuple[bytes, bytes]:
    """A throwaway EC key and a self-signed certificate for it (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cni-pipeline-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def echo_refusals(record: RequestRecord) -> None:
    """The API server's refusals quote the Authorization header they got: the first pod lists,
    every scrape of one pod through the pod proxy, the first Lease reads."""
    auth = record.headers.get("Authorization", "")
    if record.path.endswith("aws-node-1:61678/proxy/metrics"):
        raise _APIError(status_body(403, "Forbidden", f"proxy refused for {auth}"))
    refused = [r for r in echo_refusals.seen if r.path == record.path]  # type: ignore[attr-defined]
    if len(refused) < 2 and ("/pods" in record.path or "/leases/" in record.path):
        echo_refusals.seen.append(record)  # type: ignore[attr-defined]
        raise _APIError(status_body(401, "Unauthorized", f"bad credentials: {auth}"))


@pytest.fixture
def cloudwatch() -> Iterator[EchoingCloudWatch]:
    server = EchoingCloudWatch()
    yield server
    server.close()


def markers(key_pem: bytes) -> dict[str, str]:
    """Each secret, and the forms it could be written in."""
    key_body = "".join(key_pem.decode().splitlines()[1:-1])
    found = {"token": TOKEN, "secret key": SECRET_KEY, "session token": SESSION_TOKEN,
             "client key (PEM body)": key_body[20:60],
             "client key (base64 of the PEM)": base64.b64encode(key_pem).decode()[40:80]}
    for name, value in list(found.items())[:3]:
        found[f"{name} (base64)"] = base64.b64encode(value.encode()).decode()[:20]
    return found


@pytest.fixture
def fleet() -> Iterator[FleetProcess]:
    """aws-node-0 and aws-node-1 answer on 127.46.0.1 and .2 (the pod proxy forwards there)."""
    with FleetProcess(2, base_address="127.46.0.1", seed=2,
                      start_time=time.time() - 3600) as running:
        yield running


@pytest.mark.parametrize(("log_format", "tls"), [("text", False), ("json", True)])
def test_no_secret_is_written_anywhere(log_format: str, tls: bool, tmp_path: Path,
                                       cloudwatch: EchoingCloudWatch,
                                       fleet: FleetProcess) -> None:
    echo_refusals.seen = []  # type: ignore[attr-defined]
    api = KubeAPIServer(token=TOKEN, tls=tls).start()
    api.before_request = echo_refusals
    for i, address in enumerate(fleet.addresses):
        api.add_pod(f"aws-node-{i}", address.split(":")[0], f"node-{i}")
    key_pem, cert_pem = client_key_and_cert()
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", insecure_skip_tls_verify=tls)
    data = json.loads(kubeconfig.read_text())
    data["users"][0]["user"].update({
        "client-certificate-data": base64.b64encode(cert_pem).decode(),
        "client-key-data": base64.b64encode(key_pem).decode()})
    kubeconfig.write_text(json.dumps(data))
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(cw_port=cloudwatch.port, port=port, log_format=log_format))
    env = {"KUBECONFIG": str(kubeconfig), "HOSTNAME": "replica-0", "POD_NAMESPACE": "kube-system",
           "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_SESSION_TOKEN": SESSION_TOKEN, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    pipeline = start_pipeline("pipeline", ["--config", str(config), "--leader-elect",
                                           "--log-level", "debug"],
                              tmp_path / "pipeline.log", port, env)
    replicas: list[Replica] = [pipeline]
    pages: list[str] = []
    try:
        eventually(lambda: len(cloudwatch.seen) >= 2, "CloudWatch was called", replicas, 45)
        eventually(lambda: any(r.path.endswith("/proxy/metrics") for r in api.requests),
                   "a scrape went through the pod proxy", replicas, 45)
        time.sleep(2)
        pages += [pipeline.get("/metrics"), pipeline.get("/readyz"), pipeline.get("/healthz")]
        pipeline.stop(signal.SIGTERM)
    finally:
        kill_survivors([pipeline])
        api.stop()
    output = pipeline.output()

    # Every path really ran, with the real secrets on the wire.
    assert any(h.get("X-Amz-Security-Token") == SESSION_TOKEN for h in cloudwatch.seen)
    assert any(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in api.requests
               if r.path.endswith("aws-node-1:61678/proxy/metrics"))
    assert "HTTP 403" in output  # the refused scrape is logged
    assert "AccessDenied" in output and "403" in output  # the exporter's refusal is logged
    assert "cni_pipeline_" in pages[0]
    if tls:
        assert "insecure-skip-tls-verify" in output  # warned at start, by discovery and the Lease

    everything = "\n".join([output, *pages])
    leaked = {name: value for name, value in markers(key_pem).items() if value in everything}
    assert not leaked, f"secrets written out: {sorted(leaked)}"

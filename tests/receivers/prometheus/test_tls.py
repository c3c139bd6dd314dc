"""The receiver's ``tls`` settings against a real https target on loopback, and their validation."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline import (
    ErrorClass,
    TargetScrape,
)
from pipeline._config import build_config
from pipeline._errors import ComponentError, ConfigError
from pipeline._registry import Registry
from pipeline.configtls import ClientTLSConfig
from receivers.prometheus import PrometheusReceiverConfig, factory
from tests.receivers.prometheus.test_receiver import RecordingConsumer, first_batch, settings
from tests.support.fixtures import AWS_NODE_PAGES
from tests.support.kube_apiserver import make_certificates

PAGE = (AWS_NODE_PAGES / "metrics-v1.data").read_bytes()


class Certificates:
    def __init__(self, directory: Path) -> None:
        self.cert, self.key, self.ca = make_certificates(directory)


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


@pytest.fixture
async def https_target(certs: Certificates) -> AsyncIterator[str]:
    """An aws-node page served over https on 127.0.0.1, certified by the test CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert, certs.key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(PAGE) + PAGE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/metrics"
    server.close()


async def first_scrape(url: str, tls: ClientTLSConfig | None) -> TargetScrape:
    (scrape,) = await first_batch(RecordingConsumer(), url, tls=tls)
    return scrape


async def test_a_target_certified_by_the_configured_ca_is_scraped(
    https_target: str, certs: Certificates
) -> None:
    scrape = await first_scrape(https_target, ClientTLSConfig(ca_file=str(certs.ca)))
    assert scrape.health.up, scrape.health.error
    assert scrape.families["awscni_assigned_ip_addresses"]


async def test_without_the_ca_the_target_fails_verification(https_target: str) -> None:
    scrape = await first_scrape(https_target, None)
    assert scrape.health.error_class == ErrorClass.CONNECT
    assert "CERTIFICATE_VERIFY_FAILED" in scrape.health.error


async def test_insecure_skip_verify_scrapes_it_anyway(
    https_target: str, caplog: pytest.LogCaptureFixture
) -> None:
    scrape = await first_scrape(https_target, ClientTLSConfig(insecure_skip_verify=True))
    assert scrape.health.up, scrape.health.error
    assert any("not verified" in r.getMessage() for r in caplog.records)


def test_bad_tls_settings_name_their_key() -> None:
    for tls, expected in [
        ({"cert_file": "client.pem"}, "receivers.prometheus.tls.key_file"),
        ({"insecure": True}, "receivers.prometheus.tls.insecure"),
    ]:
        with pytest.raises(ConfigError) as raised:
            build_config({
                "receivers": {"prometheus": {"static_targets": ["127.0.0.1:9"], "tls": tls}},
                "exporters": {"debug": {}},
                "service": {"pipelines": {"metrics": {"receivers": ["prometheus"],
                                                      "exporters": ["debug"]}}},
            }, "test.yaml", Registry.load(), {})
        assert expected in str(raised.value), str(raised.value)


async def test_unusable_tls_files_fail_the_start_naming_their_key(tmp_path: Path) -> None:
    # Files are read at start, where they are (a config may be validated elsewhere).
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for tls, expected in [
        (ClientTLSConfig(ca_file=str(tmp_path / "missing.pem")),
         "prometheus/cni: tls\\.ca_file: cannot read"),
        (ClientTLSConfig(ca_file=str(garbage)), "prometheus/cni: tls\\.ca_file: cannot load"),
        (ClientTLSConfig(cert_file=str(garbage), key_file=str(garbage)),
         "prometheus/cni: tls\\.cert_file: cannot load"),
    ]:
        receiver = factory.create(settings(), PrometheusReceiverConfig(
            static_targets=["https://127.0.0.1:9/metrics"], tls=tls), RecordingConsumer())
        with pytest.raises(ComponentError, match=expected):
            await receiver.start(None)  # type: ignore[arg-type]
        await receiver.shutdown()

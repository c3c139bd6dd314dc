"""Config of the ``otlp`` receiver (key names as in the Collector's otlp receiver)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline import ByteSize, ComponentConfig, parse_endpoint
from pipeline.configtls import ServerTLSConfig

DEFAULT_GRPC = "0.0.0.0:4317"
DEFAULT_HTTP = "0.0.0.0:4318"


@dataclass(frozen=True, kw_only=True)
class ProtocolConfig:
    #: ``host:port`` to listen on; empty: this protocol is off.
    endpoint: str = ""
    #: ``cert_file`` and ``key_file``: TLS (else plaintext); ``client_ca_file``: mutual TLS.
    tls: ServerTLSConfig = field(default_factory=ServerTLSConfig)


@dataclass(frozen=True, kw_only=True)
class ProtocolsConfig:
    grpc: ProtocolConfig = field(default_factory=lambda: ProtocolConfig(endpoint=DEFAULT_GRPC))
    http: ProtocolConfig = field(default_factory=ProtocolConfig)


@dataclass(frozen=True, kw_only=True)
class OtlpReceiverConfig(ComponentConfig):
    protocols: ProtocolsConfig = field(default_factory=ProtocolsConfig)
    #: Largest request accepted (a gRPC message, an HTTP body).
    max_recv_msg_size: ByteSize = ByteSize(4 * 1024 * 1024)

    def validate(self) -> Iterable[tuple[str, str]]:
        endpoints = {"protocols.grpc.endpoint": self.protocols.grpc.endpoint,
                     "protocols.http.endpoint": self.protocols.http.endpoint}
        if not any(endpoints.values()):
            yield "protocols", "set protocols.grpc.endpoint or protocols.http.endpoint (or both)"
        for key, endpoint in endpoints.items():
            if endpoint:
                try:
                    parse_endpoint(endpoint, DEFAULT_GRPC if "grpc" in key else DEFAULT_HTTP)
                except ValueError as exc:
                    yield key, str(exc)
        if self.max_recv_msg_size <= 0:
            yield "max_recv_msg_size", "must be positive"

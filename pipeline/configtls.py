"""TLS settings, as the OpenTelemetry Collector's ``configtls``: one client struct for every
component that connects out (``ClientConfig``: the prometheus receiver's https scrapes and the OTLP
exporter's connection read the same ``tls:`` keys), one server struct for every component that
listens (``ServerConfig``: the otlp receiver's endpoints).

Validation checks what a config says on its own (a certificate without its key); the files are
read when the component starts, where they live (a config is often validated on a laptop for a
pod whose secrets are mounted only in the cluster), and a file that cannot be read or loaded fails
the start with an error naming its key.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ._errors import ComponentError

__all__ = ["FILE_KEYS", "ClientTLSConfig", "ServerTLSConfig"]

FILE_KEYS = ("ca_file", "cert_file", "key_file")


@dataclass(frozen=True, kw_only=True)
class ClientTLSConfig:
    """``tls:`` of a client."""

    #: CA bundle (PEM) the server is verified against, instead of the system's CAs.
    ca_file: str = ""
    #: Client certificate and its key (PEM), for servers that ask for one.
    cert_file: str = ""
    key_file: str = ""
    #: gRPC only: plaintext instead of TLS. (Elsewhere the URL's scheme decides.)
    insecure: bool = False
    #: Do not verify the server's certificate and name (for testing).
    insecure_skip_verify: bool = False

    def validate(self) -> Iterable[tuple[str, str]]:
        yield from _pair_problems(self.cert_file, self.key_file)

    def read(self, key: str) -> bytes | None:
        """The contents of the file ``key`` names (``ca_file``, ``cert_file`` or ``key_file``),
        None if unset. Raises :class:`ComponentError` naming the key."""
        return _read_file(key, getattr(self, key))

    def ssl_context(self) -> ssl.SSLContext:
        """A client context from these settings. Raises :class:`ComponentError` naming the key
        of a file that cannot be read or loaded."""
        for key in FILE_KEYS:
            self.read(key)  # a missing or unreadable file, named
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
        except (ssl.SSLError, ValueError) as exc:
            raise ComponentError(f"tls.ca_file: cannot load {self.ca_file}: {exc}") from exc
        if self.cert_file:
            _load_chain(context, self.cert_file, self.key_file)
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True, kw_only=True)
class ServerTLSConfig:
    """``tls:`` of a server. No ``cert_file``: plaintext. ``client_ca_file``: clients must show a
    certificate signed by it (mutual TLS)."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    def validate(self) -> Iterable[tuple[str, str]]:
        yield from _pair_problems(self.cert_file, self.key_file)
        if self.client_ca_file and not self.cert_file:
            yield "client_ca_file", "needs cert_file and key_file (a server certificate)"

    def read(self, key: str) -> bytes | None:
        """The contents of the file ``key`` names, None if unset (error names the key)."""
        return _read_file(key, getattr(self, key))

    def ssl_context(self) -> ssl.SSLContext:
        """A server context. Raises :class:`ComponentError` naming the key of a file that cannot
        be read or loaded."""
        for key in ("cert_file", "key_file", "client_ca_file"):
            self.read(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _load_chain(context, self.cert_file, self.key_file)
        if self.client_ca_file:
            try:
                context.load_verify_locations(self.client_ca_file)
            except (ssl.SSLError, ValueError) as exc:
                raise ComponentError(f"tls.client_ca_file: cannot load "
                                     f"{self.client_ca_file}: {exc}") from exc
            context.verify_mode = ssl.CERT_REQUIRED
        return context


# -- shared by both ------------------------------------------------------------------------


def _pair_problems(cert_file: str, key_file: str) -> Iterable[tuple[str, str]]:
    if bool(cert_file) != bool(key_file):
        yield ("key_file" if cert_file else "cert_file", "cert_file and key_file go together")


def _read_file(key: str, path: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ComponentError(f"tls.{key}: cannot read {path}: {exc.strerror or exc}") from exc


def _load_chain(context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, ValueError) as exc:
        raise ComponentError(f"tls.cert_file: cannot load {cert_file} with "
                             f"{key_file}: {exc}") from exc

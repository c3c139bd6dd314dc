"""Loading the ``kubernetes`` client's configuration: which cluster, with which credentials.

The client is imported here only inside the functions, never at import, so ``cni-pipeline
validate`` makes no network call and does not pay the client's import time.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipeline import ComponentError

from .config import KubernetesSDConfig

if TYPE_CHECKING:
    from kubernetes.client import Configuration

#: Where the kubelet mounts the pod's service account (token, ca.crt, namespace).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class DiscoveryError(ComponentError):
    """Discovery cannot start: no usable Kubernetes configuration (the message names the file)."""


def load_client_configuration(
    config: KubernetesSDConfig,
    *,
    environ: Mapping[str, str] | None = None,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> tuple[Configuration, str]:
    """The ``kubernetes`` client configuration and a phrase naming where it came from.

    An explicit ``kubeconfig`` wins; else the in-cluster service account (when
    ``KUBERNETES_SERVICE_HOST``/``_PORT`` are set and the token file exists, as client-go's
    loading rules have it); else ``KUBECONFIG`` (``:``-separated files) or ``~/.kube/config``.
    Reads files (and may run a kubeconfig's exec credential plugin); connects nowhere.
    Raises :class:`DiscoveryError` naming the file when it is missing or bad.
    """
    from kubernetes.client import Configuration
    from kubernetes.config import incluster_config

    env = os.environ if environ is None else environ
    cfg = Configuration()
    if config.kubeconfig:
        path = os.path.expanduser(config.kubeconfig)
        if not os.path.isfile(path):
            raise DiscoveryError(f"kubeconfig {path}: no such file")
        _load_kubeconfig(path, path, config.context, cfg)
        return cfg, f"kubeconfig {path}"
    token_file = os.path.join(service_account_dir, "token")
    if env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT") and (
        os.path.isfile(token_file)
    ):
        loader = incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
            token_filename=token_file,
            cert_filename=os.path.join(service_account_dir, "ca.crt"),
            environ=env,
        )
        try:
            loader.load_and_set(cfg)  # type: ignore[no-untyped-call]
        except Exception as exc:  # ConfigException, OSError: name the service account files
            raise DiscoveryError(f"in-cluster config from {service_account_dir}: {exc}") from exc
        return cfg, f"in-cluster service account ({service_account_dir})"
    paths = env.get("KUBECONFIG") or "~/.kube/config"
    existing = [os.path.expanduser(p) for p in paths.split(os.pathsep) if p]
    existing = [p for p in existing if os.path.isfile(p)]
    if not existing:
        where = f"KUBECONFIG={paths}" if env.get("KUBECONFIG") else "~/.kube/config"
        raise DiscoveryError(
            f"no Kubernetes configuration: not in a cluster (KUBERNETES_SERVICE_HOST unset or no "
            f"token in {service_account_dir}) and no kubeconfig file at {where}; "
            "set kubernetes_sd.kubeconfig or KUBECONFIG"
        )
    shown = os.pathsep.join(existing)
    _load_kubeconfig(os.pathsep.join(existing), shown, config.context, cfg)
    return cfg, f"kubeconfig {shown}"


def _load_kubeconfig(paths: str, shown: str, context: str, cfg: Configuration) -> None:
    from kubernetes.config import kube_config

    unset = cfg.host  # the client's placeholder until a cluster's server is loaded
    try:
        # persist_config=False: never write refreshed credentials back into the user's file.
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=paths, context=context or None, client_configuration=cfg,
            persist_config=False,
        )
    except Exception as exc:  # ConfigException, yaml errors, KeyError/TypeError on odd shapes
        raise DiscoveryError(f"kubeconfig {shown}: {type(exc).__name__}: {exc}") from exc
    if not cfg.host or cfg.host == unset:
        raise DiscoveryError(f"kubeconfig {shown}: the cluster has no server address")


def api_server_ssl_context(cfg: Configuration) -> ssl.SSLContext | None:
    """TLS for requests that go to the API server the way the client's own do: its CA (or the
    system's), its client certificate, and no verification if the kubeconfig says
    ``insecure-skip-tls-verify``. ``None`` for a plain-HTTP server (e.g. ``kubectl proxy``)."""
    if not str(cfg.host).startswith("https"):
        return None
    if cfg.verify_ssl:
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return ctx

"""Loading a pipeline config: YAML, ``${env:...}`` expansion, per-component schemas, references.

Everything is checked before anything starts, and every problem is reported at once with the file
and the full key path (``configs/x.yaml: exporters.awscloudwatch.flush_interval: not a duration``).
The steps follow the OpenTelemetry Collector's loader: expand, lay each component's YAML over its
factory's default config, validate each config, then check the service's references.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from ._component import ComponentConfig, ComponentID, Kind
from ._decode import Problems, join, overlay, to_data
from ._errors import ConfigError, RegistryError
from ._leader import LeaderElectionConfig
from ._registry import Registry
from ._units import Duration, parse_endpoint
from ._validate import validate_config

_ENV_REF = re.compile(r"\$\$|\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_WHOLE_REF = re.compile(r"^\$\{env:[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$")
_PIPELINE_ID = re.compile(r"^metrics(/[^\s/]+)?$")

LogLevel = Literal["", "debug", "info", "warn", "warning", "error"]


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    receivers: list[str] = field(default_factory=list)
    processors: list[str] = field(default_factory=list)
    exporters: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class TelemetryConfig:
    #: ``host:port`` for /metrics, /healthz and /readyz; empty turns the endpoint off.
    endpoint: str = "0.0.0.0:8888"
    #: Empty: the --log-level flag, else AWS_VPC_K8S_CNI_LOGLEVEL, else info.
    log_level: LogLevel = ""
    log_format: Literal["", "text", "json"] = ""
    #: /readyz turns 503 when a component has been failing for longer than this.
    unhealthy_after: Duration = Duration(300)


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    pipelines: dict[str, PipelineConfig] = field(default_factory=dict)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    #: Reload the config file when it changes (a ConfigMap's atomic ``..data`` swap included),
    #: as SIGHUP does; a file that does not validate is logged and the pipeline runs on.
    watch_config: bool = False


@dataclass(frozen=True, kw_only=True)
class PipelineSpec:
    """A pipeline with its component IDs parsed."""

    id: str
    receivers: tuple[ComponentID, ...]
    processors: tuple[ComponentID, ...]
    exporters: tuple[ComponentID, ...]


@dataclass(frozen=True, kw_only=True)
class Config:
    source: str
    receivers: dict[ComponentID, ComponentConfig]
    processors: dict[ComponentID, ComponentConfig]
    exporters: dict[ComponentID, ComponentConfig]
    service: ServiceConfig
    pipelines: tuple[PipelineSpec, ...]

    def components(self, kind: Kind) -> dict[ComponentID, ComponentConfig]:
        return {
            Kind.RECEIVER: self.receivers,
            Kind.PROCESSOR: self.processors,
            Kind.EXPORTER: self.exporters,
        }[kind]

    def to_data(self) -> dict[str, Any]:
        """The config as plain data (defaults filled in), e.g. for ``print-config``."""
        data: dict[str, Any] = {}
        for kind in Kind:
            data[kind.plural] = {
                str(cid): to_data(cfg) for cid, cfg in self.components(kind).items()
            }
        data["service"] = to_data(self.service)
        return data


# -- env expansion -------------------------------------------------------------------------------


def expand_env(node: Any, env: Mapping[str, str], path: str, problems: Problems) -> Any:
    """Expand ``${env:VAR}`` and ``${env:VAR:-default}`` in every string; ``$$`` is a literal ``$``.

    A value that is one reference alone takes the type YAML gives the expanded text (so
    ``port: ${env:PORT}`` is an integer); a reference inside other text stays text.
    """
    if isinstance(node, dict):
        return {k: expand_env(v, env, join(path, str(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, env, join(path, i), problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return node

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            (
                path,
                f"environment variable {name} is not set and has no default "
                f"(write ${{env:{name}:-default}} to give one)",
            )
        )
        return ""

    expanded = _ENV_REF.sub(substitute, node)
    if _WHOLE_REF.match(node) and expanded:
        try:
            return yaml.safe_load(expanded)
        except yaml.YAMLError:
            return expanded
    return expanded


# -- loading -------------------------------------------------------------------------------------


def _duplicate_keys(node: yaml.Node, path: str, problems: Problems) -> None:
    """Report every key written twice in one mapping, at any depth (YAML says keys are unique;
    PyYAML would silently keep the last one, hiding half of what the user wrote)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else ""
            line = key_node.start_mark.line + 1
            if key and key != "<<" and key in seen:
                problems.append(
                    (join(path, key), f"duplicate key at line {line} (first at line {seen[key]})")
                )
            seen.setdefault(key, line)
            _duplicate_keys(value_node, join(path, key), problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, join(path, i), problems)


def _parse_yaml(text: str, source: str) -> Any:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems: Problems = []
        _duplicate_keys(node, "", problems)
        if problems:
            raise ConfigError(source, problems)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_config_text(path: str) -> str:
    """A config file's text: UTF-8 (a BOM is accepted); any other content is a ConfigError."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except IsADirectoryError as exc:
        raise ConfigError(path, [("", "cannot read config file: is a directory")]) from exc
    except OSError as exc:
        raise ConfigError(path, [("", f"cannot read config file: {exc.strerror or exc}")]) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, [("", f"not UTF-8 text: byte {exc.start} ({raw[exc.start]:#04x}) is not UTF-8; "
                        "save the file as UTF-8")]
        ) from exc
    if "\x00" in text:
        raise ConfigError(path, [("", "not UTF-8 text: the file holds NUL bytes (binary?)")])
    return text


def load_config(path: str, registry: Registry, env: Mapping[str, str] | None = None) -> Config:
    return load_config_text(read_config_text(path), path, registry, env)


def load_config_text(
    text: str, source: str, registry: Registry, env: Mapping[str, str] | None = None
) -> Config:
    try:
        data = _parse_yaml(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [("", f"invalid YAML: {where}{problem}")]) from exc
    return build_config(data, source, registry, env)


def build_config(
    data: Any, source: str, registry: Registry, env: Mapping[str, str] | None = None
) -> Config:
    """Build and validate a config from parsed YAML; raises ConfigError listing every problem."""
    problems: Problems = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [
                (
                    "",
                    "the config must be a mapping with receivers, "
                    "processors, exporters and service",
                )
            ],
        )
    data = expand_env(data, os.environ if env is None else env, "", problems)
    if problems:  # unset variables only; decoding the blanks left behind would add noise
        raise ConfigError(
            source, problems, note="(the rest of the file is checked once these variables are set)"
        )
    known = {"receivers", "processors", "exporters", "service"}
    for key in data:
        if key not in known:
            problems.append((str(key), f"unknown key (valid keys: {', '.join(sorted(known))})"))
    sections = {
        kind: _load_components(kind, data.get(kind.plural), registry, problems) for kind in Kind
    }
    service = overlay(ServiceConfig(), data.get("service"), "service", problems)
    _check_telemetry(service.telemetry, problems)
    for key, message in validate_config(service.leader_election):
        problems.append((join("service.leader_election", key), message))
    declared = {
        kind: {str(k) for k in data.get(kind.plural) or {}}
        if isinstance(data.get(kind.plural), dict)
        else set()
        for kind in Kind
    }
    pipelines = _check_pipelines(service, sections, declared, problems)
    if problems:
        raise ConfigError(source, problems)
    return Config(
        source=source,
        receivers=sections[Kind.RECEIVER],
        processors=sections[Kind.PROCESSOR],
        exporters=sections[Kind.EXPORTER],
        service=service,
        pipelines=pipelines,
    )


def _load_components(
    kind: Kind, section: Any, registry: Registry, problems: Problems
) -> dict[ComponentID, ComponentConfig]:
    result: dict[ComponentID, ComponentConfig] = {}
    if section is None:
        return result
    if not isinstance(section, dict):
        problems.append((kind.plural, "expected a mapping of component IDs to their settings"))
        return result
    for raw_id, value in section.items():
        path = join(kind.plural, str(raw_id))
        try:
            cid = ComponentID.parse(str(raw_id))
        except ValueError as exc:
            problems.append((path, str(exc)))
            continue
        try:
            factory = registry.get(kind, cid.type)
        except RegistryError as exc:
            problems.append((path, str(exc)))
            continue
        if factory is None:
            known = ", ".join(registry.types(kind)) or "none"
            problems.append(
                (path, f'unknown {kind} type "{cid.type}" (known {kind.plural}: {known})')
            )
            continue
        config = overlay(factory.default_config(), value, path, problems)
        # Validated even when some keys did not decode (those keep their defaults), so every
        # problem of the file shows in one run rather than in rounds.
        try:
            checks = validate_config(config)
        except Exception as exc:  # a component's validate() that trips over a default
            checks = [("", f"could not be validated: {exc}")]
        for key, message in checks:
            problems.append((join(path, key) if key else path, message))
        result[cid] = config
    return result


def _check_telemetry(telemetry: TelemetryConfig, problems: Problems) -> None:
    if telemetry.endpoint:
        try:
            parse_endpoint(telemetry.endpoint, "0.0.0.0:8888")
        except ValueError as exc:
            problems.append(("service.telemetry.endpoint", str(exc)))
    if telemetry.unhealthy_after <= 0:
        problems.append(("service.telemetry.unhealthy_after", "must be more than 0s"))


def _check_pipelines(
    service: ServiceConfig,
    sections: dict[Kind, dict[ComponentID, ComponentConfig]],
    declared: dict[Kind, set[str]],
    problems: Problems,
) -> tuple[PipelineSpec, ...]:
    if not service.pipelines:
        problems.append(
            ("service.pipelines", "no pipeline is defined (define service.pipelines.metrics)")
        )
    specs = []
    for pipeline_id, pipeline in service.pipelines.items():
        path = join("service.pipelines", pipeline_id)
        if not _PIPELINE_ID.match(pipeline_id):
            problems.append((path, 'a pipeline ID must be "metrics" or "metrics/NAME"'))
        ids: dict[Kind, tuple[ComponentID, ...]] = {}
        for kind, names in (
            (Kind.RECEIVER, pipeline.receivers),
            (Kind.PROCESSOR, pipeline.processors),
            (Kind.EXPORTER, pipeline.exporters),
        ):
            ids[kind] = _resolve_refs(
                kind, names, sections[kind], declared[kind], join(path, kind.plural), problems
            )
        for kind in (Kind.RECEIVER, Kind.EXPORTER):
            if not getattr(pipeline, kind.plural):
                problems.append(
                    (join(path, kind.plural), f"the pipeline needs at least one {kind}")
                )
        specs.append(
            PipelineSpec(
                id=pipeline_id,
                receivers=ids[Kind.RECEIVER],
                processors=ids[Kind.PROCESSOR],
                exporters=ids[Kind.EXPORTER],
            )
        )
    return tuple(specs)


def _resolve_refs(
    kind: Kind,
    names: list[str],
    defined: dict[ComponentID, ComponentConfig],
    declared: set[str],
    path: str,
    problems: Problems,
) -> tuple[ComponentID, ...]:
    """Parse a pipeline's references; ``declared`` are the IDs written in the section, so a
    component whose own entry was already reported as broken is not reported again here."""
    ids = []
    seen = set()
    for i, name in enumerate(names):
        item_path = join(path, i)
        try:
            cid = ComponentID.parse(name)
        except ValueError as exc:
            problems.append((item_path, str(exc)))
            continue
        if cid not in defined:
            if name in declared:
                continue
            problems.append(
                (
                    item_path,
                    f'references {kind} "{cid}" which is not configured '
                    f"(define it under {kind.plural}:)",
                )
            )
            continue
        if cid in seen:
            problems.append((item_path, f'{kind} "{cid}" is listed twice'))
            continue
        seen.add(cid)
        ids.append(cid)
    return tuple(ids)


def config_warnings(config: Config, registry: Registry) -> list[str]:
    """Things that are valid but probably not what the user meant, for ``validate`` and start.

    A pipeline with no component that makes metrics (one whose factory has ``planned_metrics``,
    the hook ``validate`` plans with: a processor such as ``cni_aggregate``, or a receiver that
    collects metrics itself, such as ``aws_subnets``) hands exporters raw scrapes and no
    aggregates: they would publish nothing useful. Legitimate for a debug pipeline, so a warning
    rather than an error.
    """
    lines = []
    for spec in config.pipelines:
        makers = [
            cid
            for kind, ids in ((Kind.RECEIVER, spec.receivers), (Kind.PROCESSOR, spec.processors))
            for cid in ids
            if hasattr(registry.get(kind, cid.type), "planned_metrics")
        ]
        if not makers:
            lines.append(
                f"{config.source}: service.pipelines.{spec.id}: no processor aggregates the "
                "scrapes (add cni_aggregate to processors:); its exporters get no metrics "
                "to publish"
            )
    return lines

"""Odd command-line input: a usage error naming the flag (exit 2), never a traceback."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cni_pipeline.cli import main
from pipeline._config import load_config_text
from pipeline._registry import Registry
from pipeline._runtime import Service

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "flag", "message"),
    [
        (["validate", "--config", "configs/debug.yaml", "--nodes", "-1"], "--nodes", "1 or more"),
        (["validate", "--config", "configs/debug.yaml", "--zones", "0"], "--zones", "1 or more"),
        (["validate", "--config", "configs/debug.yaml", "--nodegroups", "x"], "--nodegroups",
         "whole number"),
        (["demo", "--interval", "2"], "--interval", "use units"),
        (["demo", "--interval", "0s"], "--interval", "more than 0s"),
        (["demo", "--cycles", "0"], "--cycles", "1 or more"),
        (["demo", "--nodes", "0"], "--nodes", "1 or more"),
    ],
)
def test_bad_numbers_are_usage_errors_naming_the_flag(argv, flag, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and message in err, err


def test_print_config_into_a_closed_pipe_is_quiet():
    """`cni-pipeline print-config | head -1`: the reader leaves early; no traceback."""
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the first write
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cni_pipeline", "print-config"],
            stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60, check=False, cwd=ROOT,
        )
    finally:
        os.close(writer)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 141


NO_AGGREGATE = """\
receivers:
  prometheus: {scrape_interval: 1s, scrape_timeout: 500ms, static_targets: ["127.0.0.1:9"]}
exporters:
  debug: {}
service:
  telemetry: {endpoint: ""}
  pipelines:
    metrics: {receivers: [prometheus], exporters: [debug]}
"""


def test_a_pipeline_without_an_aggregating_processor_is_valid_with_a_warning(tmp_path, capsys):
    path = tmp_path / "raw.yaml"
    path.write_text(NO_AGGREGATE)
    assert main(["validate", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"warning: {path}: service.pipelines.metrics: no processor aggregates" in out
    good = tmp_path / "good.yaml"
    good.write_text((ROOT / "configs" / "debug.yaml").read_text())
    assert main(["validate", "--config", str(good)]) == 0
    assert "warning" not in capsys.readouterr().out


async def test_start_logs_the_same_warning(caplog):
    caplog.set_level(logging.WARNING, logger="cni_pipeline")
    registry = Registry.load()
    service = Service(load_config_text(NO_AGGREGATE, "raw.yaml", registry, {}), registry)
    stop = asyncio.Event()
    stop.set()  # start, then stop at once
    await service.run(stop)
    assert any("no processor aggregates" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM yet (Linux: SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def test_sigterm_while_starting_is_a_clean_stop(tmp_path):
    """A pod deleted while cni-pipeline starts (before its first tick): exit 0, no traceback."""
    path = tmp_path / "slow.yaml"
    path.write_text(NO_AGGREGATE.replace("scrape_interval: 1s", "scrape_interval: 1h"))
    proc = subprocess.Popen([sys.executable, "-m", "cni_pipeline", "--config", str(path)],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = 600  # polls of 0.05 s: 30 s at most
        while not _catches_sigterm(proc.pid) and deadline and proc.poll() is None:
            time.sleep(0.05)
            deadline -= 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, "DEBUG", logging.DEBUG),  # the Go helper's variable, as aws-node spells it
        (None, "FATAL", logging.ERROR),  # its most severe level: we never log at fatal
        (None, "nonsense", logging.INFO),
        ("warn", "DEBUG", logging.WARNING),  # the flag wins
    ],
)
def test_log_level_falls_back_to_the_go_helper_s_variable(
    monkeypatch: pytest.MonkeyPatch, flag: str | None, env: str, expected: int
) -> None:
    from cni_pipeline.cli import _parser, _setup_logging

    monkeypatch.setenv("AWS_VPC_K8S_CNI_LOGLEVEL", env)
    args = _parser().parse_args(["--log-level", flag] if flag else [])
    root = logging.getLogger()
    saved = root.level, root.handlers[:]
    try:
        _setup_logging(args, None)
        assert root.level == expected
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]

"""`cni-pipeline demo`, the README's first command, runs end to end and agrees with the fleet."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def test_demo_publishes_what_the_fleet_says():
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.run(
        [sys.executable, "-m", "cni_pipeline", "demo", "--nodes", "4", "--cycles", "3",
         "--interval", "1s"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("  ")]
    table = {row[0]: row for row in rows if len(row) > 2 and row[-1] in ("ok", "MISMATCH:")}
    assert len(table) == 20 + 2 + 1  # the rules, two subnets and the fullest subnet
    assert "minSubnetAvailableIPs" in table
    assert all(row[-1] == "ok" for row in table.values())
    assert "MISMATCH" not in proc.stdout
    forecast = next(line for line in proc.stdout.splitlines() if "ipExhaustionHours" in line)
    assert float(forecast.split("ipExhaustionHours ")[1].split(",")[0]) > 0


def test_demo_moves_to_a_free_range_when_its_addresses_are_held():
    """`make demo` while another fleet holds 127.20.0.x:61678: the demo moves on, says so."""
    from cni_pipeline.demo import FLEET_BASES, FLEET_PORT

    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
    with socket.socket() as held:
        held.bind(("127.20.0.2", FLEET_PORT))  # the second node's address, as a running fleet
        held.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "cni_pipeline", "demo", "--nodes", "2", "--cycles", "2",
             "--interval", "1s"],
            capture_output=True, text=True, timeout=180, env=env,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"127.20.0.2:{FLEET_PORT} is in use" in proc.stderr
    assert f"({FLEET_BASES[1]}:{FLEET_PORT} ... " in proc.stdout
    assert "Traceback" not in proc.stderr

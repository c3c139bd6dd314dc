"""`cni-pipeline demo`, the README's first command, runs end to end and agrees with the fleet."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_publishes_what_the_fleet_says():
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--nodes", "4", "--cycles", "3",
         "--interval", "1s"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("  ")]
    table = {row[0]: row for row in rows if len(row) > 2 and row[-1] in ("ok", "MISMATCH:")}
    assert len(table) == 20
    assert all(row[-1] == "ok" for row in table.values())
    assert "MISMATCH" not in proc.stdout

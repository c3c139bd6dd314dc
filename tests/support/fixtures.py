"""Real aws-node metric pages (copied from the project's shared fixtures), for tests and benches."""

from pathlib import Path

AWS_NODE_PAGES = Path(__file__).resolve().parents[1] / "fixtures" / "aws-node"

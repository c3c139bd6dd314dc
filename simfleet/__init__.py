"""simfleet: a simulated fleet of aws-node metrics endpoints on loopback.

N nodes, node ``i`` listening on ``base + i`` (127.20.0.1, 127.20.0.2, ...) port 61678, each
serving an aws-node page (every awscni_* family of the rule table in docs/aggregation.md,
go_*, process_*, optional padding)
whose values the caller controls, with restarts and failure modes. Gzip when asked, chunked past
4 KB, like aws-node's Go server. Used by the tests, the benchmarks and ``cni-pipeline demo``::

    from simfleet import FleetProcess

    with FleetProcess(3, base_address="127.21.0.1") as fleet:
        before = fleet.client.truth()
        fleet.client.restart(1)
        after = fleet.client.advance()
        expected = after.counter_increase("awscni_add_ip_req_count", since=before)
"""

from ._client import FleetClient, FleetError, FleetTruth, NodeTruth
from ._process import FleetProcess, process_alive
from ._server import FAILURE_MODES

__all__ = [
    "FAILURE_MODES",
    "FleetClient",
    "FleetError",
    "FleetProcess",
    "FleetTruth",
    "NodeTruth",
    "process_alive",
]

"""Log lines name the component by kind and ID, so a receiver and an exporter of one type differ."""

from __future__ import annotations

import logging

from pipeline import ComponentID, Kind
from pipeline._logging import KlogFormatter, component_logger


def test_receiver_and_exporter_of_one_type_log_under_different_tags(caplog):
    caplog.set_level(logging.INFO)
    cid = ComponentID("prometheus")
    component_logger(cid, Kind.RECEIVER).info("from the receiver")
    component_logger(cid, Kind.EXPORTER).warning("from the exporter", extra={"dropped_items": 3})
    receiver, exporter = caplog.records
    formatter = KlogFormatter()
    assert "[receiver/prometheus] from the receiver" in formatter.format(receiver)
    assert "[exporter/prometheus] from the exporter" in formatter.format(exporter)
    assert exporter.dropped_items == 3  # the call's own extra survives the adapter

"""The cni-pipeline application: the ``cni-pipeline`` command, its drop-in mode and its demo.

It is to the engine (``pipeline``) what the Collector's ``otelcol`` command and a distribution are
to its ``service``: it loads a config, finds the components by entry point, and runs them.
"""

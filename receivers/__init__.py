"""Built-in receivers, each registered through the ``cni_pipeline.receivers`` entry points."""

"""Built-in processors. Each is a plugin registered by entry point (``cni_pipeline.processors``)."""

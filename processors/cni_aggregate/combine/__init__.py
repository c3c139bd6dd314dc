"""``cni_combine``: the gateway's processor. Shards' partials (``cni_aggregate`` with
``output: partials``) in, exactly what one replica over the whole fleet publishes out
(docs/sharding.md). It lives beside ``cni_aggregate``: the partial form is one contract, and one
package owns both of its sides. The entry point names :data:`factory`."""

from .config import CniCombineConfig
from .factory import CniCombineFactory, factory

__all__ = ["CniCombineConfig", "CniCombineFactory", "factory"]

"""``python -m cni_pipeline`` is ``cni-pipeline``."""

import sys

from .cli import main

sys.exit(main())

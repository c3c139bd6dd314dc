"""``python -m pipeline`` is ``cni-pipeline``."""

import sys

from ._cli import main

sys.exit(main())

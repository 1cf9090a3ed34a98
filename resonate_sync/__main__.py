"""``python -m resonate_sync``: the ``resonate-sync`` command line."""

import sys

from .cli import main

sys.exit(main())

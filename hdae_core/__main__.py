"""``python -m hdae_core``: the ``hdae`` command."""
import sys

from .cli import main

sys.exit(main())

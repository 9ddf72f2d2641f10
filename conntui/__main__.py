"""``python -m conntui``."""

import sys

from .cli import main

sys.exit(main())

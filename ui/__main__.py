"""``python -m ui [--config FILE] [--fullscreen] [--size 800x480]``."""

import sys

from ui.app import main

sys.exit(main())

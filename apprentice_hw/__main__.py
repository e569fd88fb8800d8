"""``python -m apprentice_hw`` is the same as the ``apprentice-hw`` command."""

import sys

from apprentice_hw.cli import main

sys.exit(main())

"""``python -m apprentice_hw.cli``: the same as the ``apprentice-hw`` command."""

import sys

from apprentice_hw.cli.app import main

sys.exit(main())

"""``python -m compress.cli``: the same as the ``compress`` command."""

import sys

from compress.cli import main

sys.exit(main())

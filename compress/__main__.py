"""``python -m compress`` (and ``torchrun ... -m compress run ...``): the ``compress`` command."""

import sys

from compress.cli import main

sys.exit(main())

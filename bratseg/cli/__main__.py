"""``python -m bratseg.cli``: the ``bratseg`` command (``torchrun -m bratseg.cli train ...``)."""

import sys

from bratseg.cli import main

sys.exit(main())

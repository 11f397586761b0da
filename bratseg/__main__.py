import sys

from bratseg.cli import main

sys.exit(main())

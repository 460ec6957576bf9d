"""Run `python -m pmkeeper`."""

import sys

from pmkeeper.cli import main

sys.exit(main())

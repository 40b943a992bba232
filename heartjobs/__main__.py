"""`python -m heartjobs` is the `heartjobs` command."""

import sys

from heartjobs.cli import main

sys.exit(main())

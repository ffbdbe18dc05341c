"""`python -m comparisons.bench`: see comparisons.bench.cli."""

import sys

from comparisons.bench.cli import main

sys.exit(main())

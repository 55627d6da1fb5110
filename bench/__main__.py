"""C{python -m bench}: run the benchmark suite (see L{bench.cli})."""

import sys

from bench.cli import main

sys.exit(main())

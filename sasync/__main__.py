"""
The C{sasync} command: C{python -m sasync demo} and C{python -m sasync serve}.

See L{sasync.demo.cli} (and C{sasync --help}).
"""

from __future__ import annotations

import sys

from sasync.demo.cli import main as main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())

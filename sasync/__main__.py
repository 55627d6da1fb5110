"""
The C{sasync} command: C{python -m sasync demo}.

A placeholder until the demo (issue 6) lands and replaces this module.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """
    Say that the demo is not there yet.

    @return: the exit status, 0.
    """
    sys.stdout.write("the demo is delivered by issue 6 (not landed yet)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

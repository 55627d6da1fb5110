"""
The version of AsynQueue: that of the distribution it ships in, sAsync
(C{version=} in C{setup.py}, the one source). sasync checks it on import.
"""

from __future__ import annotations

import importlib.metadata

try:
    __version__ = importlib.metadata.version("sAsync")
except importlib.metadata.PackageNotFoundError:  # a source tree, not installed
    __version__ = "0+unknown"

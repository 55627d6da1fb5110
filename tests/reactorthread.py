"""
The reactor thread of the tests: L{sasync.testing.reactor}, under the name
the project's tests have always imported it by.
"""

from __future__ import annotations

from sasync.testing.reactor import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from sasync.testing.reactor import ReactorTimeoutError as ReactorTimeoutError
from sasync.testing.reactor import inReactorThread as inReactorThread
from sasync.testing.reactor import runInReactor as runInReactor
from sasync.testing.reactor import startReactor as startReactor
from sasync.testing.reactor import stopReactor as stopReactor

"""Makes the helpers in tests/support/ importable from every suite below.

pytest's default ("prepend") import mode puts the directory of each conftest
and test module first on sys.path, which is how a suite imports its own
helpers (`from hub_support import ...`). For this file that directory is
tests/ itself, and tests/ must not stay there: its suite folders tests/hub
and tests/actors would be imported as namespace packages in place of the
installed `hub` and `actors`. So tests/ comes off again, and tests/support/,
which holds only the modules several suites share, goes on instead:
`from wire_support import ...` (a hand-written HTTP and WebSocket client) and
`from log_support import ...` (failing a test whose code logged an error).
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).parent)
_SUPPORT = str(Path(__file__).parent / "support")

while _TESTS in sys.path:
    sys.path.remove(_TESTS)
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)

# Fixtures shared by several suites (a real Valkey server for the Redis tests).
pytest_plugins = ["valkey_support"]

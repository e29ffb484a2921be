"""The load generator's process: `python -m hub.bench.loadgen`, run by `hub bench`.

It reads one LoadSpec (JSON) from stdin, plays its scenario on uvloop and
writes JSON lines to stdout: `{"progress": [phase, done, total]}` now and
then, and finally `{"result": figures}` or `{"error": message}` (exit status
1). It runs apart from the server, so that the two do not share a core, and
apart from `hub bench` itself, which only starts processes and reports.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Final

import uvloop

from hub.bench.lobby import run_lobby
from hub.bench.procstat import raise_file_limit
from hub.bench.scenarios import SCENARIO_RUNNERS, Figures, ScenarioError
from hub.bench.spec import LoadSpec

# Progress lines are written at most this often, in seconds.
PROGRESS_INTERVAL_SECONDS: Final = 0.2


def _write(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class _Progress:
    """Writes progress lines, at most one per interval unless the phase changes."""

    def __init__(self) -> None:
        self._phase = ""
        self._last = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase == self._phase and done < total and now - self._last < PROGRESS_INTERVAL_SECONDS:
            return
        self._phase, self._last = phase, now
        _write({"progress": [phase, done, total]})


async def _run(spec: LoadSpec) -> Figures:
    if spec.scenario == "lobby":
        return await run_lobby(spec, _Progress())
    return await SCENARIO_RUNNERS[spec.scenario](spec, _Progress())


def main() -> int:
    spec = LoadSpec.from_json(sys.stdin.readline())
    raise_file_limit()
    try:
        figures = uvloop.run(_run(spec))
    except (TimeoutError, ScenarioError, OSError) as error:
        _write({"error": f"{type(error).__name__}: {error}"})
        return 1
    _write({"result": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run one fuzz target under atheris: `python fuzz/run.py TARGET [libFuzzer options] [CORPUS...]`.

`scripts/fuzz` runs this for each target with a time bound; see
docs/reliability.md. Only the hub and the protocol libraries under it
(wsproto, h11, msgpack's Python side) are instrumented for coverage: trio's
own branches would only add noise.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import atheris


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python fuzz/run.py TARGET [libFuzzer options] [CORPUS_DIR...]")
    name = sys.argv[1]
    from fuzz.targets import load

    with atheris.instrument_imports(include=["hub", "wsproto", "h11", "msgpack"]):
        test_one_input = load(name)
    # libFuzzer runs argv[0] again through the shell for -merge=1: make it
    # the whole command that runs this target.
    command = shlex.join([sys.executable, str(Path(__file__).resolve()), name])
    atheris.Setup([command, *sys.argv[2:]], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""The fuzz targets replay their committed corpus: every input gives a documented outcome.

The corpus (fuzz/corpus/<target>/) holds the hand-made seeds and what
coverage-guided runs (`scripts/fuzz`) found that reached new code, findings
included once fixed; replaying it needs no atheris. A finding that comes
back fails here, named by its file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fuzz.targets import TARGETS, load  # noqa: E402

CORPUS = ROOT / "fuzz" / "corpus"


@pytest.mark.parametrize("target", TARGETS)
def test_the_corpus_replays_cleanly(target: str) -> None:
    test_one_input = load(target)
    inputs = sorted((CORPUS / target).iterdir())
    assert len(inputs) >= 10, f"the {target} corpus is nearly empty"
    for path in inputs:
        try:
            test_one_input(path.read_bytes())
        except Exception as error:
            raise AssertionError(f"{path.relative_to(ROOT)}: {error!r}") from error


def test_every_target_has_a_corpus() -> None:
    assert sorted(path.name for path in CORPUS.iterdir()) == sorted(TARGETS)

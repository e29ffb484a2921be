"""`compacted`: a table emptied by a crowd's leaving gives its memory back."""

from __future__ import annotations

import sys

from actors import compacted


def test_a_table_far_emptier_than_its_peak_is_copied_to_its_size_in_order() -> None:
    table = {f"member-{index}": index for index in range(1000)}
    peak = sys.getsizeof(table)
    for index in range(990):
        del table[f"member-{index}"]
    assert sys.getsizeof(table) == peak  # a dict never shrinks on its own

    smaller = compacted(table)

    assert smaller is not table
    assert smaller == table
    assert list(smaller) == list(table)  # the order is kept
    assert sys.getsizeof(smaller) * 10 < peak


def test_a_small_or_well_filled_table_is_left_as_it_is() -> None:
    small = {index: index for index in range(50)}
    for index in range(49):
        del small[index]
    assert compacted(small) is small

    busy = {index: index for index in range(1000)}
    for index in range(300):
        del busy[index]
    assert compacted(busy) is busy

"""The boxed tables the unit and every bench print."""

from __future__ import annotations

import pytest

from edge.app.stats import Series, grid, table


def test_grid_pads_each_column_to_its_widest_cell() -> None:
    out = grid(
        [("parse", "26.30", "37356"), ("serial source (pty)", "4.1", "9")],
        header=("path", "CPU ms", "per s"),
        title="GPS",
    )
    lines = out.splitlines()
    assert lines[0] == "GPS"
    assert lines[1] == lines[3] == lines[-1] == "+---------------------+--------+-------+"
    assert lines[2] == "| path                | CPU ms | per s |"
    assert lines[4] == "| parse               |  26.30 | 37356 |"
    assert lines[5] == "| serial source (pty) |    4.1 |     9 |"
    left = grid([("a", "1")], header=("measure", "result"), align="ll").splitlines()
    assert left[3] == "| a       | 1      |"


def test_grid_refuses_ragged_rows_and_a_bad_alignment() -> None:
    with pytest.raises(ValueError, match="same number of columns"):
        grid([("a", "1"), ("b",)])
    with pytest.raises(ValueError, match="one 'l' or 'r' per column"):
        grid([("a", "1")], align="lc")


def test_table_is_a_two_column_grid() -> None:
    assert table([("frames", "120"), ("fps", "25.0")], title="run") == (
        "run\n+--------+------+\n| frames |  120 |\n| fps    | 25.0 |\n+--------+------+"
    )


def test_series_percentiles_cover_the_last_samples_only() -> None:
    s = Series(maxlen=3)
    assert s.percentile(50) is None
    for v in (100.0, 1.0, 2.0, 3.0):
        s.add(v)
    assert s.count == 4
    assert s.percentile(50) == 2.0
    assert s.percentile(100) == 3.0

"""Tables as Markdown and CSV: one function each, for the explain scores and the report."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_gscorecam.tables import csv_table, markdown_table


def test_a_markdown_table():
    table = markdown_table(["image", "a cat"], [["x.png", "1.50"], ["y.png", "-2.00"]])
    assert table.splitlines() == [
        "| image | a cat |",
        "| --- | --- |",
        "| x.png | 1.50 |",
        "| y.png | -2.00 |",
    ]


def test_pipes_and_line_breaks_stay_inside_their_cell():
    table = markdown_table(["prompt", "a|b"], [["two\nlines", "c"]])
    assert table.splitlines()[0] == "| prompt | a\\|b |"
    assert table.splitlines()[2] == "| two lines | c |"


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.integers(1, 4).flatmap(
        lambda width: st.tuples(
            st.lists(st.text(max_size=6), min_size=width, max_size=width),
            st.lists(st.lists(st.text(max_size=6), min_size=width, max_size=width), max_size=4),
        )
    )
)
def test_csv_reads_back_as_written(table):
    header, rows = table
    assert list(csv.reader(io.StringIO(csv_table(header, rows), newline=""))) == [header, *rows]


@pytest.mark.parametrize("write", [markdown_table, csv_table])
def test_a_ragged_row_is_refused(write):
    with pytest.raises(ValueError, match="rows: row 1 has 1 cells, the header 2 titles"):
        write(["a", "b"], [["1", "2"], ["3"]])

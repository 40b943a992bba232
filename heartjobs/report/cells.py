"""The report's tables as text files: a markdown table (summary.md, and what `heartjobs report` prints for
logs) and CSV rows (summary.csv), with every cell made inert.

A cell holds names and values from run folders and spec files made elsewhere (a job folder's name, a
--jobs file's stem, a configuration's label), so a cell must not be able to end its row or column, become
HTML or a link in a rendered markdown file, or become a formula in a spreadsheet (OWASP's CSV injection
guidance: text cells are quoted, and one that starts like a formula gets a leading ' so that it reads as
text; numbers stay numbers).
"""

from __future__ import annotations

import csv
import io
import re

# What a spreadsheet takes for the start of a formula (OWASP: = + - @, tab, carriage return).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A backslash is escaped too: a cell ending in \ would otherwise escape the | after it.
_MARKDOWN = {"\\": "\\\\", "|": "\\|", "&": "&amp;", "<": "&lt;", ">": "&gt;"}


def markdown_cell(text: object) -> str:
    """A value as one markdown table cell: on one line, no column break, no HTML (nor autolink), no inline
    link or image ("](" is what makes one; brackets alone, as in "[95 % CI]", stay readable)."""
    text = _CONTROL.sub(" ", str(text))
    return "".join(_MARKDOWN.get(char, char) for char in text).replace("](", "]\\(")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(markdown_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(markdown_cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_cell(value: object) -> object:
    """A value for a CSV cell: text that would start a formula gets a leading ' (OWASP); numbers, booleans
    and None (an empty cell) as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(columns: list[str], rows: list[dict]) -> str:
    """The rows' `columns` as CSV: a header line, then one line per row; every text cell quoted (a separator
    or quote inside cannot start a new cell) and made inert (csv_cell), numbers unquoted."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow(columns)
    writer.writerows([csv_cell(row.get(column)) for column in columns] for row in rows)
    return buffer.getvalue()

"""A streaming look at a CSV file before it is read whole: is it a lead export at all?

Reading a lead file decodes and parses it in memory, which costs several times its size.
A file no lead export looks like (binary, UTF-16, a header with thousands of columns, a line
longer than a megabyte) is recognised here from one pass over its bytes, a megabyte at a
time, so a wrong file dropped in the inbox costs bounded memory and time and is rejected
with a message that says what it is.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import BinaryIO

# Far above any real lead export (a CRM export has tens of columns; a row with a long note a
# few kilobytes), far below what makes reading a file expensive.
MAX_COLUMNS = 5_000
MAX_LINE_BYTES = 1 << 20
DELIMITERS = (",", ";", "\t")
_CHUNK = 1 << 20
_UNICODE_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",  # before UTF-16: its BOM starts with UTF-16's
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F])


def layout_problem(path: Path) -> str | None:
    """Why the file is not a CSV text export of leads, or None; raises OSError if unreadable."""
    with open(path, "rb") as handle:
        first = handle.read(_CHUNK)
        for bom, encoding in _UNICODE_BOMS.items():
            if first.startswith(bom):
                return f"the file is {encoding} encoded (Excel's 'Unicode text'?); save it as 'CSV UTF-8' and drop it again"
        if looks_binary(first):
            return "the file is binary (control bytes throughout), not a CSV text export"
        return _line_problem(first, handle)


def looks_binary(head: bytes) -> bool:
    """Control bytes all over the start of the file: an image, archive or database, not text.

    A stray control character in a cell is a row defect that validation quarantines, so
    only a share no text export has (5%) makes a file binary.
    """
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
    return controls > 0.05 * len(head)


def _line_problem(chunk: bytes, handle: BinaryIO) -> str | None:
    """A header with more than MAX_COLUMNS columns, or a line longer than MAX_LINE_BYTES."""
    line, length = 1, 0
    delimiters = dict.fromkeys((d.encode() for d in DELIMITERS), 0)
    while chunk:
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            length += end - start
            if line == 1:
                for delimiter in delimiters:
                    delimiters[delimiter] += chunk.count(delimiter, start, end)
                if max(delimiters.values()) >= MAX_COLUMNS:
                    return f"the header has more than {MAX_COLUMNS:,} columns; a lead export has about ten, so this is not one"
            if length > MAX_LINE_BYTES:
                return (
                    f"line {line} is longer than {MAX_LINE_BYTES:,} bytes; a lead row is a few hundred, "
                    "so this is not a lead export (or its line breaks were lost)"
                )
            if newline < 0:
                break
            line, length, start = line + 1, 0, newline + 1
        chunk = handle.read(_CHUNK)
    return None

"""Corrupt lead files, as they really arrive in an inbox, for the reliability benchmark and its test.

Each is what a person or a broken export drops by mistake: a copy cut short, a binary
file with a .csv name, a spreadsheet saved in the wrong encoding, a header that went
wrong (a million columns), one enormous line. The sizes are parameters, so the test can
use small ones and the benchmark the real ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date
from pathlib import Path

from factory_dagster.intake.reading import REQUIRED_COLUMNS
from factory_dagster.intake.sample_leads import generate_leads

_CHUNK = 1 << 20
# Another seed than the demo's sample files (7), so the good file's leads are new people.
_SEED = 2026


def _good_csv(day: date, n: int = 40) -> bytes:
    """A clean lead export (no defective rows) as UTF-8 bytes."""
    return generate_leads(day, n, seed=_SEED, defect_rate=0.0).to_csv(index=False, lineterminator="\n").encode("utf-8")


def truncated(path: Path, day: date) -> None:
    """A copy cut short in the middle of a row: the last record stops inside its email address."""
    data = _good_csv(day)
    last_row = data.rindex(b"\n", 0, len(data) // 2) + 1
    path.write_bytes(data[: data.index(b"@", last_row)])


def binary(path: Path, day: date, size: int = 256 * 1024) -> None:
    """Random bytes named like a CSV (an image or archive dropped by mistake)."""
    path.write_bytes(random.Random(f"binary:{day}").randbytes(size))


def wrong_encoding_cp1252(path: Path, day: date) -> None:
    """A spreadsheet saved as Windows-1252: the accented names are not UTF-8."""
    text = _good_csv(day).decode("utf-8")
    rows = text.split("\n")
    rows[3] = rows[3].replace(",", ",Müller-Lüdenscheidt ", 1)  # make sure a non-ASCII character is there
    path.write_bytes("\n".join(rows).encode("cp1252", errors="replace"))


def wrong_encoding_utf16(path: Path, day: date) -> None:
    """Excel's "Unicode text" export: UTF-16 with a byte-order mark."""
    path.write_bytes(_good_csv(day).decode("utf-8").encode("utf-16"))


def million_columns(path: Path, day: date, columns: int = 1_000_000) -> None:
    """A header that went wrong: the lead columns and then `columns` in all, followed by real rows."""
    good = _good_csv(day, n=5).decode("utf-8").split("\n")
    extra = columns - len(good[0].split(","))
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(good[0])
        for start in range(0, extra, 100_000):
            handle.write("".join(f",extra_{i}" for i in range(start, min(extra, start + 100_000))))
        handle.write("\n" + "\n".join(good[1:]))


def one_huge_line(path: Path, day: date, size: int = 200 * 1024 * 1024) -> None:
    """A single line of `size` bytes and no line break: a lead header, then a runaway value."""
    header = ",".join(REQUIRED_COLUMNS).encode()
    pattern = b"x" * _CHUNK
    with open(path, "wb") as handle:
        handle.write(header + b",")
        left = size - len(header) - 1
        while left > 0:
            handle.write(pattern[: min(left, _CHUNK)])
            left -= _CHUNK


def good(path: Path, day: date) -> None:
    """A clean export of the same day: it must be imported and sent despite its neighbours."""
    path.write_bytes(_good_csv(day))


CORRUPT_INPUTS: dict[str, Callable[[Path, date], None]] = {
    "truncated.csv": truncated,
    "binary.csv": binary,
    "wrong_encoding_cp1252.csv": wrong_encoding_cp1252,
    "wrong_encoding_utf16.csv": wrong_encoding_utf16,
    "million_columns.csv": million_columns,
    "one_200mb_line.csv": one_huge_line,
}

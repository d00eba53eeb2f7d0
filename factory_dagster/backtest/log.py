"""Read a log of past decisions (CSV or Parquet) into the frame every estimator takes.

The standard frame has one row per logged decision, in the file's order (the order is time: the
replay walks it in batches), with columns `context` (the context columns' values joined into one
label; "all" without context columns), `arm` (text), `propensity` (the logging policy's probability
of the logged arm, in (0, 1]) and `reward` (a number), plus `source_row`.

Nothing is dropped or guessed: a missing column, an empty arm or context, a non-numeric reward or a
propensity outside (0, 1] stops the read with a `BacktestInputError` that names the file, the column
and the first bad row. Rows are counted 1-based over data rows (the header is not a row); for a CSV
the message also gives the line the record starts on, as an editor shows it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

LOG_COLUMNS = ["context", "arm", "propensity", "reward"]
NO_CONTEXT = "all"
CONTEXT_SEPARATOR = " | "


class BacktestInputError(ValueError):
    """A log that cannot be backtested; the message names the file, and the column and row where there is one."""


@dataclass(frozen=True)
class LogSpec:
    """Which columns of the file hold what: the arm, the reward, the context columns, and either a
    propensity column or the statement that the arms were drawn uniformly (`uniform`)."""

    arm: str
    reward: str
    context: tuple[str, ...] = ()
    propensity: str | None = None
    uniform: bool = False

    def __post_init__(self) -> None:
        if self.uniform == (self.propensity is not None):
            raise BacktestInputError(
                "say how the logged arms were chosen: --propensity COL (the logging policy's probability of the logged arm) "
                "or --uniform (drawn uniformly at random over the arms logged in each context); exactly one is needed"
            )


def read_log(path: Path | str, spec: LogSpec) -> pd.DataFrame:
    """The file as the standard frame (see the module docstring); raises BacktestInputError on anything unusable."""
    path = Path(path)
    raw = _read_table(path)
    wanted = [spec.arm, spec.reward, *spec.context, *([spec.propensity] if spec.propensity else [])]
    missing = [c for c in dict.fromkeys(wanted) if c not in raw.columns]
    if missing:
        shown = ", ".join(repr(c) for c in list(raw.columns)[:20])
        raise BacktestInputError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} (found: {shown})")
    if raw.empty:
        raise BacktestInputError(f"{path}: the log has no data rows")
    return standard_frame(raw, spec, path)


def standard_frame(raw: pd.DataFrame, spec: LogSpec, path: Path | str = "<frame>") -> pd.DataFrame:
    """Validate `raw` (a file's table, or rows built in memory) and return the standard frame."""
    arm = _text_column(raw, spec.arm, path)
    contexts = [_text_column(raw, column, path) for column in spec.context]
    reward = _numeric_column(raw, spec.reward, path, "a number")
    if spec.propensity:
        propensity = _numeric_column(raw, spec.propensity, path, "a probability in (0, 1]")
        bad = ~((propensity > 0) & (propensity <= 1))
        if bad.any():
            _raise_bad_row(path, spec.propensity, raw, int(np.flatnonzero(bad.to_numpy())[0]), "a probability in (0, 1]")
    frame = pd.DataFrame({"context": context_labels(contexts, len(raw)), "arm": arm.to_numpy()})
    if spec.uniform:
        # Uniform over the arms logged in the row's context: 1/K of that context.
        frame["propensity"] = 1.0 / frame.groupby("context")["arm"].transform("nunique").to_numpy()
    else:
        frame["propensity"] = propensity.to_numpy(dtype=float)
    frame["reward"] = reward.to_numpy(dtype=float)
    frame["source_row"] = np.arange(1, len(raw) + 1)
    return frame


def context_labels(columns: Sequence[pd.Series], rows: int) -> np.ndarray:
    """One label per row for the combined context columns; "all" when there are none."""
    if not columns:
        return np.full(rows, NO_CONTEXT, dtype=object)
    joined = columns[0].to_numpy(dtype=object).copy()
    for column in columns[1:]:
        joined = joined + CONTEXT_SEPARATOR + column.to_numpy(dtype=object)
    tuples = pd.DataFrame({i: c.to_numpy(dtype=object) for i, c in enumerate(columns)}).drop_duplicates()
    if len(tuples) != len(set(joined)):
        raise BacktestInputError(f"context values contain '{CONTEXT_SEPARATOR.strip()}', so two contexts would share a label")
    return joined


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if not path.exists():
        raise BacktestInputError(f"{path}: no such file")
    try:
        if suffix == ".csv":
            # Text throughout: validation, not the reader, decides what a bad value is.
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise BacktestInputError(f"{path}: the file is empty") from exc
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise BacktestInputError(f"{path}: cannot read the file: {exc}") from exc
    raise BacktestInputError(f"{path}: unsupported file type '{path.suffix}' (expected .csv or .parquet)")


def _text_column(raw: pd.DataFrame, column: str, path: Path | str) -> pd.Series:
    values = raw[column]
    text = values.astype(object).where(values.notna(), "").map(lambda v: str(v).strip())
    empty = text.eq("").to_numpy()
    if empty.any():
        _raise_bad_row(path, column, raw, int(np.flatnonzero(empty)[0]), "a non-empty value")
    return text


def _numeric_column(raw: pd.DataFrame, column: str, path: Path | str, expected: str) -> pd.Series:
    values = raw[column]
    if values.dtype == bool:
        values = values.astype(int)
    numbers = pd.to_numeric(values.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce")
    bad = (numbers.isna() | ~np.isfinite(numbers.astype(float))).to_numpy()
    if bad.any():
        _raise_bad_row(path, column, raw, int(np.flatnonzero(bad)[0]), expected)
    return numbers.astype(float)


def _raise_bad_row(path: Path | str, column: str, raw: pd.DataFrame, position: int, expected: str) -> None:
    value = raw[column].iloc[position]
    value = value.item() if isinstance(value, np.generic) else value  # 1.5, not np.float64(1.5)
    where = f"row {position + 1}"
    line = _csv_line(Path(path), position) if str(path).lower().endswith(".csv") else None
    if line is not None:
        where += f" (line {line})"
    raise BacktestInputError(f"{path}: column '{column}', {where}: expected {expected}, got {value!r}")


def _csv_line(path: Path, position: int) -> int | None:
    """The line the `position`-th data record starts on (header = line 1), read again only for the message."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            index, start = -1, 1  # the header is record -1
            for record in reader:
                if record:  # pandas skips blank lines, so they are no rows
                    if index == position:
                        return start
                    index += 1
                start = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None

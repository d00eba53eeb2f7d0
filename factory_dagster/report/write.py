"""`write_report`: read the warehouse, draw every plot, write the page, the figures and their markdown."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from factory_dagster.atomic import write_atomically
from factory_dagster.report.data import load_report_data
from factory_dagster.report.figures import figure_rows, key_figures, summary_markdown
from factory_dagster.report.html import render_page
from factory_dagster.report.plots import draw_all

INDEX = "index.html"
FIGURES_JSON = "key_figures.json"
SUMMARY_MD = "summary.md"


@dataclass(frozen=True)
class ReportResult:
    """What a report run wrote: the page, its PNGs (page order), the key figures and their markdown table."""

    index: Path
    images: list[Path]
    figures: dict[str, Any]
    markdown: str


def _write_text(path: Path, text: str) -> None:
    """Write beside and rename, so a browser or a copy never sees half a page."""
    write_atomically(path, text.encode("utf-8"))


def write_report(
    warehouse: Path, out_dir: Path, campaign: str | None = None, days: int | None = None, url: str | None = None
) -> ReportResult:
    """Write the report for `campaign` (default: every campaign in the warehouse) over the last `days` days
    (default: all) into `out_dir`: index.html, one PNG per plot, key_figures.json and summary.md. With `url`, from
    the PostgreSQL warehouse there instead of the file."""
    data = load_report_data(Path(warehouse), campaign, days, url)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = key_figures(data)
    plots = draw_all(data, figures, out_dir)
    markdown = summary_markdown(figures)
    scope = "every campaign" if campaign is None else f"campaign {campaign}"
    period = "all days" if days is None else f"the last {days} days"
    notes = [f"{scope}, {period}; warehouse {data.warehouse}"]
    if not data.warehouse_exists:
        notes.append("the warehouse file does not exist yet: the line creates it on its first run")
    heading = "Factory: the loop in pictures" + (f" ({', '.join(data.campaigns)})" if data.campaigns else "")
    page = render_page(plots, figure_rows(figures), heading, notes, datetime.now(UTC))
    _write_text(out_dir / FIGURES_JSON, json.dumps(figures, indent=2, sort_keys=True) + "\n")
    _write_text(out_dir / SUMMARY_MD, markdown + "\n")
    _write_text(out_dir / INDEX, page)
    return ReportResult(out_dir / INDEX, [out_dir / p.filename for p in plots], figures, markdown)

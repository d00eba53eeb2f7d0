"""The report's static HTML page: key figures, then each PNG with a caption.

Self-contained on purpose: no external URL, no JavaScript library, images by relative path, so
the folder can be zipped, mailed or served as it is. Every text that came from the warehouse
(campaign, arm and model names, reasons) is HTML-escaped. One tiny inline script counts, on
window load, the images that really decoded (`naturalWidth > 0`) into the body's
`data-images-loaded` attribute: the end-to-end test reads it back from headless Chromium.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import datetime
from html import escape

from factory_dagster.report.plots import Plot

IMAGE_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
  }
  document.body.setAttribute("data-images-loaded", String(loaded));
});
"""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1150px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
.meta { color: #555; margin-top: 0; }
table.figures { border-collapse: collapse; margin: 1rem 0 2rem; }
table.figures th, table.figures td { text-align: left; padding: 0.25rem 1rem 0.25rem 0; border-bottom: 1px solid #e4e4e4;
       vertical-align: top; }
table.figures th { font-weight: 600; white-space: nowrap; }
nav a { margin-right: 1rem; }
figure { margin: 0 0 2.5rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92rem; margin-top: 0.4rem; }
.nodata { color: #888; }
"""


NODATA_CLASS = ' class="nodata"'


def _script_hash(script: str) -> str:
    """The CSP hash that lets exactly this inline script run, and nothing else."""
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def _anchor(plot: Plot) -> str:
    return plot.filename.rsplit(".", 1)[0]


def render_page(
    plots: Sequence[Plot], rows: Sequence[tuple[str, str]], heading: str, notes: Sequence[str], generated_at: datetime
) -> str:
    """The whole page as a string; `rows` are the key figures (label, value), `notes` plain-text lines under the title."""
    policy = (
        f"default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'; script-src '{_script_hash(IMAGE_CHECK_SCRIPT)}'"
    )
    table = "\n".join(f"<tr><th>{escape(label)}</th><td>{escape(value)}</td></tr>" for label, value in rows)
    nav = " ".join(f'<a href="#{escape(_anchor(p), quote=True)}">{escape(p.title)}</a>' for p in plots)
    sections = "\n".join(
        f'<section id="{escape(_anchor(p), quote=True)}">\n<h2>{escape(p.title)}</h2>\n<figure>'
        f'<img src="{escape(p.filename, quote=True)}" alt="{escape(p.title + ": " + p.caption, quote=True)}">'
        f"<figcaption{'' if p.has_data else NODATA_CLASS}>{escape(p.caption)}</figcaption></figure>\n</section>"
        for p in plots
    )
    meta = "<br>".join(escape(note) for note in [*notes, f"generated {generated_at:%Y-%m-%d %H:%M:%S %Z}".strip()])
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{escape(policy, quote=True)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(heading)}</title>
<style>{STYLE}</style>
</head>
<body data-images-total="{len(plots)}" data-images-loaded="pending">
<h1>{escape(heading)}</h1>
<p class="meta">{meta}</p>
<table class="figures">
{table}
</table>
<nav>{nav}</nav>
{sections}
<script>{IMAGE_CHECK_SCRIPT}</script>
</body>
</html>
"""

"""Saving plotly figures: an interactive HTML page that works offline, and a PNG when possible."""

from __future__ import annotations

import sys
from pathlib import Path

import plotly.graph_objects as go

_png_failed = False


def save_figure(fig: go.Figure, path: str | Path, png: bool = True) -> list[Path]:
    """Write PATH.html (plotly.js in a shared `plotly.min.js` beside it, so it needs no internet)
    and, if `png`, PATH.png through kaleido. Kaleido needs a Chrome/Chromium on the machine; where
    it has none the PNG is skipped with one warning, since the HTML holds the same figure."""
    global _png_failed
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    html = path.with_suffix(".html")
    fig.write_html(html, include_plotlyjs="directory")
    written = [html]
    if png and not _png_failed:
        try:
            fig.write_image(path.with_suffix(".png"), width=900, height=550, scale=2)
            written.append(path.with_suffix(".png"))
        except Exception as err:  # noqa: BLE001 - kaleido missing, no browser, ...: the PNG is optional
            _png_failed = True
            print(f"note: PNG export skipped ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
                  "the HTML files hold the figures", file=sys.stderr)
    return written

"""Saving plotly figures: an interactive HTML page that works offline, and a PNG when possible."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

import plotly.graph_objects as go

PNG_SIZE = {"width": 900, "height": 550, "scale": 2}
RENDER_TIMEOUT = 120  # seconds for the browser to start, and then for one figure

_png_failed = False
_renderer: _Renderer | None = None


class _Renderer:
    """One headless browser (kaleido) that renders every PNG of a command. Kaleido's own
    `write_image` starts and stops a browser per figure (1.5-3 s each on 2 cores); this one starts
    in a thread as soon as it is made, so its start-up overlaps the command's own work."""

    def __init__(self):
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.browser: Future = Future()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(),), daemon=True,
                                       name="png-renderer")
        self._stop = asyncio.Event()  # bound to the loop on first use (Python ≥ 3.10)
        self.thread.start()

    async def _serve(self) -> None:
        import kaleido

        try:
            async with kaleido.Kaleido(n=1) as browser:
                self.browser.set_result(browser)
                await self._stop.wait()
        except BaseException as err:  # noqa: BLE001 - no browser, no kaleido...: save_figure says so and goes on
            if not self.browser.done():
                self.browser.set_exception(err)

    def png(self, fig: go.Figure) -> bytes:
        import asyncio

        browser = self.browser.result(RENDER_TIMEOUT)
        work = browser.calc_fig(fig.to_dict(), opts={"format": "png", **PNG_SIZE})
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(RENDER_TIMEOUT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(RENDER_TIMEOUT)
        if not self.thread.is_alive():
            self.loop.close()


@contextmanager
def png_renderer(enabled: bool = True) -> Iterator[None]:
    """Inside this block, `save_figure` renders its PNGs with one browser, started at once in the
    background (`_Renderer`); without it, each PNG starts its own."""
    global _renderer
    if not enabled or _renderer is not None or _png_failed:
        yield
        return
    _renderer = _Renderer()
    try:
        yield
    finally:
        renderer, _renderer = _renderer, None
        renderer.close()


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
            if _renderer is not None:
                path.with_suffix(".png").write_bytes(_renderer.png(fig))
            else:
                fig.write_image(path.with_suffix(".png"), **PNG_SIZE)
            written.append(path.with_suffix(".png"))
        except Exception as err:  # noqa: BLE001 - kaleido missing, no browser, ...: the PNG is optional
            _png_failed = True
            print(f"note: PNG export skipped ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:160]}); "
                  "the HTML files hold the figures", file=sys.stderr)
    return written

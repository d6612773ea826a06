"""Static PNG/PDF export of the figures through kaleido (which drives a local Chromium)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

DEFAULT_BROWSER = "/usr/bin/chromium"
_BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class ReportExportError(RuntimeError):
    """Static export is impossible here (no browser) or failed; the message says what to do."""


def find_browser() -> str:
    """The Chromium kaleido should drive; sets BROWSER_PATH (read by kaleido/choreographer) when it was unset.

    Never downloads one: without a local browser this raises ReportExportError.
    """
    configured = os.environ.get("BROWSER_PATH")
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise ReportExportError(f"BROWSER_PATH={configured!r} is not an executable browser; fix it, or skip the "
                                "static figures with --no-static")
    candidates = [DEFAULT_BROWSER, *filter(None, (shutil.which(name) for name in _BROWSER_NAMES))]
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            os.environ["BROWSER_PATH"] = path
            return path
    raise ReportExportError("no Chromium/Chrome found for the static figure export (kaleido): install Debian's "
                            "'chromium', set BROWSER_PATH to a Chrome/Chromium binary, or pass --no-static")


def export_figures(figures: Mapping[str, object], directory: str | Path, *,
                   formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write every figure as ``directory/NAME.FORMAT`` in one kaleido session; returns the paths."""
    import plotly.io as pio

    find_browser()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figs, paths, scales, widths, heights = [], [], [], [], []
    for name, fig in figures.items():
        for fmt in formats:
            figs.append(fig)
            paths.append(directory / f"{name}.{fmt}")
            scales.append(2 if fmt == "png" else 1)  # sharper bitmaps; PDF is vector anyway
            # kaleido ignores the layout's size and draws 700 x 500 unless told.
            widths.append(fig.layout.width or 900)
            heights.append(fig.layout.height or 560)
    if not figs:
        return []
    try:
        with _quiet("choreographer", "kaleido", "logistro"):
            pio.write_images(figs, paths, scale=scales, width=widths, height=heights)
    except Exception as exc:  # kaleido raises assorted errors when the browser cannot start
        raise ReportExportError(f"static figure export through kaleido failed: {exc}") from exc
    empty = [p for p in paths if not p.is_file() or p.stat().st_size == 0]
    if empty:
        raise ReportExportError(f"kaleido wrote no data for: {', '.join(p.name for p in empty)}")
    return paths


@contextlib.contextmanager
def _quiet(*names: str):
    """Chromium's pipe chatter is logged as tracebacks by choreographer; hide it during the export."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

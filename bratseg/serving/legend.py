"""The colour key of the web pages, as HTML: what the Flask app and the Gradio demo show beside
a slice drawn by :func:`bratseg.reporting.render.render_overlay` (whose colours it lists).

Example:
    >>> "edema" in legend_html("EDEMA") and "rgb(0, 200, 83)" in legend_html("EDEMA")
    True
"""

from __future__ import annotations

import html

from bratseg.reporting.render import legend_entries


def legend_html(region: str) -> str:
    """An HTML colour key of what :func:`render_overlay` draws for ``region``."""
    items = "".join(
        f'<li><span class="swatch" style="display:inline-block;width:0.9em;height:0.9em;'
        f'margin-right:0.4em;vertical-align:middle;background:rgb{colour}"></span>{html.escape(name)}</li>'
        for name, colour in legend_entries(region)
    )
    return f'<ul class="legend" style="list-style:none;padding:0;margin:0.3em 0">{items}</ul>'

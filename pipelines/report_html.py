"""``report.html``: the report as one self-contained page to open or send.

Everything is inline: the tables as HTML, the plots as ``data:image/png;base64`` URIs, the style in a
``<style>`` element; no script, font or stylesheet is fetched, so the page renders the same offline, from an
e-mail attachment or behind a strict Content-Security-Policy.  The cells are the ones ``report.md`` shows
(``pipelines.report``'s ``*_table`` functions), escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from lmpipe.pipelines.report_rows import Report

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1em; color: #1b1b1b; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
p.meta, p.note { color: #555; }
table { border-collapse: collapse; margin: .6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; white-space: nowrap; }
th { background: #eef2f7; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
div.wide { overflow-x: auto; }
figure { margin: 1.2em 0; } img { max-width: 100%; border: 1px solid #ddd; }
"""


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    rows += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body]
    return '<div class="wide"><table>\n' + "\n".join(rows) + "\n</table></div>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(path.stem.replace("_", " "))
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"></figure>'


def report_html(
    report: Report,
    tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence[str]]]],
    plots: Sequence[Path],
    *,
    notes: dict[str, str] | None = None,
) -> str:
    """The page: a heading naming the runs and corpora, each ``(title, head, body)`` table, then the plots."""
    notes = notes or {}
    runs = sorted({r.run for r in report.models} | {r.run for r in report.embeddings} | set(report.corpora))
    meta = "; ".join(f"run {Path(r).name}, corpus {report.corpora.get(r, '?')}" for r in runs)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>lmpipe report: {html.escape(', '.join(Path(r).name for r in runs))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>lmpipe report</h1>",
        f'<p class="meta">{html.escape(meta)}</p>',
    ]
    if not tables:
        parts.append("<p>No language model or word vectors in these runs yet.</p>")
    for title, head, body in tables:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if title in notes:
            parts.append(f'<p class="note">{html.escape(notes[title])}</p>')
        parts.append(_table(head, body))
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [_image(p) for p in plots]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

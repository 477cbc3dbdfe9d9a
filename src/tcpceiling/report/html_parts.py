"""What every section of the HTML report is made of: the document types, the page's
style, a result's label, a figure with its caption, and a table."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

Doc = dict[str, Any]
Run = tuple[str, Doc]  # (label, document)
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
td, th { border: 1px solid #ddd; padding: .25rem .5rem; vertical-align: top; text-align: left; }
tr.binding td { background: #fde2e2; } .binding { color: #b00; }
figure { margin: 1rem 0; } figcaption { font-size: .85rem; color: #555; }
svg { max-width: 100%; height: auto; }
"""


def label(doc: Doc, name: str = "") -> str:
    host = doc.get("host") or {}
    when = (host.get("time") or "")[:16].replace("T", " ")
    return name or f"{host.get('hostname') or 'host'} {when}".strip()


def fig(svg: str, caption: str, kind: str) -> str:
    text = f"<figcaption>{escape(caption)}</figcaption>"
    return f'<figure class="plot" data-plot="{kind}">{svg}{text}</figure>'


def table(head: Sequence[str], rows: Sequence[tuple[Sequence[str], str]]) -> str:
    """rows: (cells, css class of the row)."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        f'<tr class="{cls}">' + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"
        for cells, cls in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"

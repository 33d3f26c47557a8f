"""A tiny document model rendered twice: Markdown (``report.md``) and self-contained HTML
(``report.html``, charts inline as base64 PNG).

A document is a list of blocks: :class:`Heading`, :class:`Para`, :class:`Table`,
:class:`Chart`, :class:`Bullets`. Text is plain (inline ``**bold**`` and `` `code` `` are
honoured in both outputs); everything else is escaped for HTML.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Block",
    "Bullets",
    "Chart",
    "Heading",
    "Para",
    "Table",
    "slug",
    "to_html",
    "to_markdown",
]


@dataclass(frozen=True)
class Heading:
    """A heading of ``level`` 1-4."""

    level: int
    text: str


@dataclass(frozen=True)
class Para:
    """A paragraph."""

    text: str


@dataclass(frozen=True)
class Bullets:
    """A bulleted list."""

    items: Sequence[str]


@dataclass(frozen=True)
class Table:
    """A table: ``header`` cells, then ``rows``; an optional ``note`` printed below."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    note: str = ""


@dataclass(frozen=True)
class Chart:
    """A PNG chart: ``filename`` (relative, for Markdown), ``png`` bytes, ``caption``."""

    filename: str
    png: bytes
    caption: str


Block = Heading | Para | Bullets | Table | Chart


def slug(text: str) -> str:
    """The anchor of a heading, as GitHub makes it (lower case, punctuation dropped, spaces
    to hyphens); :func:`to_html` gives headings the same ids, so ``[x](#slug)`` links work
    in both outputs."""
    kept = "".join(ch for ch in text.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    """Render ``blocks`` as GitHub-flavoured Markdown (charts as image links)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            lines = [
                "| " + " | ".join(_md_cell(h) for h in b.header) + " |",
                "|" + "|".join("---" for _ in b.header) + "|",
            ]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            if b.note:
                lines.append("")
                lines.append(b.note)
            out.append("\n".join(lines))
        else:
            out.append(f"![{b.caption}]({b.filename})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


_INLINE = re.compile(r"\*\*(.+?)\*\*|`(.+?)`|\[([^\]]+)\]\(([^)]+)\)")


def _inline(text: str) -> str:
    pos = 0
    parts = []
    for m in _INLINE.finditer(text):
        parts.append(html.escape(text[pos : m.start()]))
        if m.group(1) is not None:
            parts.append(f"<strong>{html.escape(m.group(1))}</strong>")
        elif m.group(2) is not None:
            parts.append(f"<code>{html.escape(m.group(2))}</code>")
        else:
            parts.append(f'<a href="{html.escape(m.group(4))}">{html.escape(m.group(3))}</a>')
        pos = m.end()
    parts.append(html.escape(text[pos:]))
    return "".join(parts)


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em;display:block;
overflow-x:auto;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2} tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #ddd} figure{margin:1em 0}
figcaption{font-style:italic;color:#555} code{background:#f4f4f4;padding:0 .2em}
.note{font-size:.85em;color:#555}
"""


def to_html(blocks: Sequence[Block], title: str) -> str:
    """Render ``blocks`` as one self-contained HTML page (charts inline, no external files)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f'<h{b.level} id="{slug(b.text)}">{_inline(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            if b.note:
                out.append(f'<p class="note">{_inline(b.note)}</p>')
        else:
            data = base64.b64encode(b.png).decode("ascii")
            out.append(
                f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline(b.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"

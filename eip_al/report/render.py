"""A tiny document model rendered twice: markdown (links files) and self-contained HTML.

A report is a list of blocks (headings, paragraphs, bullet lists, tables, figures).
Every table is also written as CSV (full precision, what tests read back) and every
figure as PNG; the markdown links them relatively, the HTML embeds the PNGs as base64
data URIs so the one file can be mailed or opened offline. All writes are atomic.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from eip_al.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402


@dataclass
class _Heading:
    level: int
    text: str


@dataclass
class _Paragraph:
    text: str
    kind: str = "text"  # text | note (something missing or worth a warning)


@dataclass
class _Bullets:
    items: list[str]


@dataclass
class _Table:
    name: str
    df: pd.DataFrame
    shown: bool
    columns: list[str] | None  # shown subset (the CSV has them all)

    def view(self) -> pd.DataFrame:
        return self.df if self.columns is None else self.df[self.columns]


@dataclass
class _Figure:
    name: str
    png: bytes
    caption: str


Block = _Heading | _Paragraph | _Bullets | _Table | _Figure


def format_value(value: object) -> str:
    """Display form of a table cell: 4 significant digits for floats, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.4g}"
    return str(value)


def _inline_html(text: str) -> str:
    """Escape text and turn `code` spans into <code> (the only inline markup used)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _cell(value: object) -> str:
    """A table cell; long text (reasons, messages, paths) wraps instead of widening the table."""
    text = format_value(value)
    cls = ' class="text"' if isinstance(value, str) and len(text) > 40 else ""
    return f"<td{cls}>{html.escape(text)}</td>"


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.table-wrap{max-width:100%;overflow-x:auto}
td{white-space:nowrap}td.text{white-space:normal;min-width:16em;text-align:left}
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555}
.note{background:#fff6d6;border-left:4px solid #e0a800;padding:.4em .8em}
code{background:#f4f4f4;padding:0 .2em}
""".strip()


@dataclass
class ReportWriter:
    """Collects blocks for one report and writes md, html, csv and png files.

    CSV and PNG files go to `out_dir`; the md/html go to `doc_dir` (default: `out_dir`)
    and refer to the files by paths relative to it.
    """

    out_dir: Path
    doc_dir: Path | None = None
    blocks: list[Block] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(_Heading(level, text))

    def text(self, text: str) -> None:
        self.blocks.append(_Paragraph(text))

    def note(self, text: str) -> None:
        """A visible remark: a missing input, a skipped section, an alarming state."""
        self.blocks.append(_Paragraph(text, kind="note"))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(_Bullets(list(items)))

    def table(
        self, df: pd.DataFrame, name: str, shown: bool = True, columns: list[str] | None = None
    ) -> Path:
        """Write `df` to `<name>.csv` and show it (only `columns` of it, or only a link when
        `shown` is false)."""
        path = self.out_dir / f"{name}.csv"
        atomic_write_text(path, df.to_csv(index=False))
        self.tables.append(path)
        self.blocks.append(_Table(name, df, shown, columns))
        return path

    def figure(self, fig: Figure, name: str, caption: str) -> Path:
        """Save `fig` as `<name>.png` (atomically); figures are pyplot-free, nothing to close."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        png = buf.getvalue()
        path = self.out_dir / f"{name}.png"
        atomic_write_bytes(path, png)
        self.figures.append(path)
        self.blocks.append(_Figure(name, png, caption))
        return path

    # -- rendering ------------------------------------------------------------------
    def _link(self, file_name: str) -> str:
        doc_dir = self.doc_dir if self.doc_dir is not None else self.out_dir
        return Path(os.path.relpath(self.out_dir / file_name, doc_dir)).as_posix()

    def markdown(self, title: str) -> str:
        out = [f"# {title}", ""]
        for b in self.blocks:
            if isinstance(b, _Heading):
                out += [f"{'#' * b.level} {b.text}", ""]
            elif isinstance(b, _Paragraph):
                out += [f"> **Note:** {b.text}" if b.kind == "note" else b.text, ""]
            elif isinstance(b, _Bullets):
                out += [f"* {item}" for item in b.items] + [""]
            elif isinstance(b, _Table):
                if b.shown and len(b.df):
                    view = b.view()
                    cols = [str(c) for c in view.columns]
                    out.append("| " + " | ".join(cols) + " |")
                    out.append("| " + " | ".join("---" for _ in cols) + " |")
                    for row in view.itertuples(index=False):
                        cells = [format_value(v).replace("|", "\\|") for v in row]
                        out.append("| " + " | ".join(cells) + " |")
                    out.append("")
                out += [f"Table: [{b.name}.csv]({self._link(b.name + '.csv')}) ({len(b.df)} rows)", ""]
            else:
                out += [f"![{b.caption}]({self._link(b.name + '.png')})", "", f"*{b.caption}*", ""]
        return "\n".join(out)

    def html(self, title: str) -> str:
        body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        for b in self.blocks:
            if isinstance(b, _Heading):
                body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
            elif isinstance(b, _Paragraph):
                cls = ' class="note"' if b.kind == "note" else ""
                prefix = "<b>Note:</b> " if b.kind == "note" else ""
                body.append(f"<p{cls}>{prefix}{_inline_html(b.text)}</p>")
            elif isinstance(b, _Bullets):
                items = "".join(f"<li>{_inline_html(i)}</li>" for i in b.items)
                body.append(f"<ul>{items}</ul>")
            elif isinstance(b, _Table):
                if b.shown and len(b.df):
                    view = b.view()
                    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in view.columns)
                    rows = "".join("<tr>" + "".join(_cell(v) for v in r) + "</tr>"
                                   for r in view.itertuples(index=False))
                    # wide tables scroll inside the page (it stays readable at 1280 px)
                    body.append(f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
                                f"<tbody>{rows}</tbody></table></div>")
                body.append(
                    f'<p><small>Table: <a href="{html.escape(self._link(b.name + ".csv"))}">{b.name}.csv</a> '
                    f"({len(b.df)} rows)</small></p>"
                )
            else:
                data = base64.b64encode(b.png).decode("ascii")
                cap = html.escape(b.caption)
                body.append(
                    f'<figure><img alt="{cap}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{cap}</figcaption></figure>"
                )
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )

    def write(self, title: str, stem: str = "report") -> tuple[Path, Path]:
        """Write `<stem>.md` and `<stem>.html` into the document directory.

        PNG and CSV files of an earlier build that this build did not write are removed
        first, so the directory never shows a figure the report no longer stands behind.
        """
        written = set(self.figures) | set(self.tables)
        for old in [*self.out_dir.glob("*.png"), *self.out_dir.glob("*.csv")]:
            if old not in written:
                old.unlink()
        doc_dir = self.doc_dir if self.doc_dir is not None else self.out_dir
        md_path, html_path = doc_dir / f"{stem}.md", doc_dir / f"{stem}.html"
        atomic_write_text(md_path, self.markdown(title))
        atomic_write_text(html_path, self.html(title))
        return md_path, html_path

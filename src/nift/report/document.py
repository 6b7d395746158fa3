"""The report as data (sections of blocks) and its two renderings: one self-contained HTML page, one Markdown file.

Both renderings come from the same blocks, so the twins cannot drift apart. The HTML page has its CSS inline and
its images as base64 PNG data URIs: no script, no font, no stylesheet or image is fetched from anywhere, and it reads
the same in a browser with JavaScript off, in a mail client or printed. The Markdown file names the PNGs, which
are written beside it.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Para:
    """A paragraph. `code` spans in backticks and **bold** are rendered; kind: text | note | missing."""

    text: str
    kind: str = "text"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    align: str = ""  # one letter per column: l or r (default: first column left, the others right)
    caption: str = ""
    row_classes: list[str] = field(default_factory=list)  # HTML only: e.g. "good" / "bad" per row
    header: bool = True  # False: a two-column list of names and values (the HTML has no header row)


@dataclass
class Figure:
    name: str  # file name beside report.md
    png: bytes
    alt: str
    caption: str = ""


@dataclass
class Code:
    text: str
    lang: str = ""


@dataclass
class Details:
    """Folded content (an HTML <details>, readable without JavaScript); Markdown shows it under a bold line."""

    summary: str
    blocks: list


@dataclass
class Card:
    label: str
    value: str
    sub: str = ""


@dataclass
class Cards:
    cards: list[Card]


@dataclass
class Answer:
    """One side of a side-by-side example: the answer split into (text, repeats an earlier sentence) segments."""

    label: str
    segments: list[tuple[str, bool]]
    badges: list[tuple[str, str]]  # (text, good | bad | neutral)
    cut_chars: int = 0  # characters left out of the report


@dataclass
class Example:
    title: str
    question: str
    answers: list[Answer]
    why: str = ""


@dataclass
class Section:
    id: str
    title: str
    blocks: list
    missing: bool = False  # the stage behind this section is not in the run (the section says what to run)


@dataclass
class Document:
    title: str
    subtitle: list[str]
    sections: list[Section]


# ----------------------------------------------------------------------------------------------------- HTML

CSS = """
:root { --fg:#1f2933; --muted:#616e7c; --line:#d9e2ec; --bg:#f5f7fa; --accent:#2c5282; --before:#7b8794;
        --after:#2b6cb0; --good:#2f855a; --bad:#c53030; --rep:#fed7d7; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font:15px/1.55 -apple-system, "Segoe UI", Roboto,
       "Helvetica Neue", Arial, "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 32px 60px; }
header.top { background:#102a43; color:#f0f4f8; padding:26px 32px 20px; }
header.top .inner { max-width:1180px; margin:0 auto; }
header.top h1 { margin:0 0 6px; font-size:26px; font-weight:650; letter-spacing:.2px; }
header.top p { margin:2px 0; color:#bcccdc; font-size:13.5px; }
header.top code { background:rgba(255,255,255,.1); color:#f0f4f8; }
nav.toc { margin:14px 0 0; display:flex; flex-wrap:wrap; gap:6px 8px; }
nav.toc a { color:#d9e2ec; text-decoration:none; font-size:13px; padding:3px 10px; border:1px solid #334e68;
            border-radius:14px; }
nav.toc a.missing { color:#829ab1; border-style:dashed; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 24px 20px;
          margin:18px 0; box-shadow:0 1px 2px rgba(16,42,67,.05); }
section.missing { background:#fbfcfd; }
h2 { font-size:20px; margin:0 0 12px; color:#102a43; border-bottom:2px solid var(--line); padding-bottom:6px; }
h3 { font-size:16px; margin:18px 0 8px; color:#243b53; }
p { margin:8px 0; }
p.note { background:#f0f4f8; border-left:4px solid var(--accent); padding:8px 12px; border-radius:4px; }
p.missing { background:#fffaf0; border-left:4px solid #dd6b20; padding:8px 12px; border-radius:4px; }
code { font:13px/1.4 "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; background:#f0f4f8;
       padding:1px 4px; border-radius:3px; }
pre { font:12.5px/1.45 "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; background:#f8fafc;
      border:1px solid var(--line); border-radius:6px; padding:10px 12px; overflow-x:auto; margin:8px 0; }
table { border-collapse:collapse; margin:10px 0 6px; font-size:13.5px; width:auto; max-width:100%; }
th, td { border-bottom:1px solid var(--line); padding:5px 10px; vertical-align:top; }
th { background:#f0f4f8; color:#243b53; font-weight:600; text-align:left; white-space:nowrap; }
td.r, th.r { text-align:right; font-variant-numeric:tabular-nums; }
tr:nth-child(even) td { background:#fafbfc; }
table.kv td:first-child { color:#486581; white-space:nowrap; }
tr.good td { background:#f0fff4; } tr.bad td { background:#fff5f5; }
caption { caption-side:bottom; text-align:left; color:var(--muted); font-size:12.5px; padding-top:6px; }
figure { margin:12px 0; } figure img { max-width:100%; height:auto; border:1px solid var(--line);
         border-radius:6px; background:#fff; }
figcaption { color:var(--muted); font-size:12.5px; margin-top:4px; }
details { margin:8px 0; border:1px solid var(--line); border-radius:6px; padding:6px 12px; background:#fcfdfe; }
details summary { cursor:pointer; font-weight:600; color:#243b53; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(165px, 1fr)); gap:12px; margin:4px 0 6px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 14px; background:#fbfdff; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.5px; }
.card .value { font-size:21px; font-weight:650; color:#102a43; margin-top:2px; }
.card .sub { color:var(--muted); font-size:12.5px; }
.example { border:1px solid var(--line); border-radius:8px; margin:16px 0; overflow:hidden; }
.example .head { background:#f0f4f8; padding:8px 14px; font-weight:600; color:#243b53; }
.example .why { font-weight:400; color:var(--muted); font-size:13px; }
.example .question { padding:10px 14px; border-bottom:1px solid var(--line); white-space:pre-wrap; }
.example .question b { color:#243b53; }
.example .sides { display:grid; grid-template-columns:1fr 1fr; }
.example .side { padding:10px 14px; min-width:0; }
.example .side + .side { border-left:1px solid var(--line); }
.example .side h4 { margin:0 0 6px; font-size:14px; }
.example .side.s0 h4 { color:var(--before); } .example .side.s1 h4 { color:var(--after); }
.example .answer { white-space:pre-wrap; word-wrap:break-word; background:#fff; border:none; padding:0;
                   font:13.5px/1.5 -apple-system, "Segoe UI", Roboto, Arial, "DejaVu Sans", sans-serif; }
.example .empty { color:var(--muted); font-style:italic; }
.example .cut { color:var(--muted); font-size:12px; }
mark.rep { background:var(--rep); color:inherit; border-radius:2px; }
.badge { display:inline-block; font-size:11.5px; padding:1px 8px; border-radius:10px; margin:0 4px 4px 0;
         border:1px solid var(--line); color:#334e68; background:#f8fafc; }
.badge.good { color:var(--good); border-color:#9ae6b4; background:#f0fff4; }
.badge.bad { color:var(--bad); border-color:#feb2b2; background:#fff5f5; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:24px; }
@media print { body { background:#fff; } section { box-shadow:none; break-inside:avoid-page; } }
"""

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _inline(text: str) -> str:
    out = html.escape(text)
    out = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", out)
    return _BOLD.sub(lambda m: f"<b>{m.group(1)}</b>", out)


def _html_block(b) -> str:
    if isinstance(b, Para):
        cls = f' class="{b.kind}"' if b.kind != "text" else ""
        return f"<p{cls}>{_inline(b.text)}</p>"
    if isinstance(b, Table):
        align = b.align or ("l" + "r" * (len(b.columns) - 1))
        head = "".join(f'<th class="{a}">{_inline(c)}</th>' for c, a in zip(b.columns, align, strict=False))
        body = []
        for i, row in enumerate(b.rows):
            cls = b.row_classes[i] if i < len(b.row_classes) and b.row_classes[i] else ""
            tr = f'<tr class="{cls}">' if cls else "<tr>"
            body.append(tr + "".join(f'<td class="{a}">{_inline(str(c))}</td>'
                                     for c, a in zip(row, align, strict=False)) + "</tr>")
        cap = f"<caption>{_inline(b.caption)}</caption>" if b.caption else ""
        thead = f"<thead><tr>{head}</tr></thead>" if b.header else ""
        cls = "" if b.header else ' class="kv"'
        return f"<table{cls}>{cap}{thead}<tbody>{''.join(body)}</tbody></table>"
    if isinstance(b, Figure):
        data = base64.b64encode(b.png).decode("ascii")
        cap = f"<figcaption>{_inline(b.caption)}</figcaption>" if b.caption else ""
        return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.alt)}">{cap}</figure>'
    if isinstance(b, Code):
        return f"<pre>{html.escape(b.text)}</pre>"
    if isinstance(b, Details):
        inner = "\n".join(_html_block(x) for x in b.blocks)
        return f"<details><summary>{_inline(b.summary)}</summary>\n{inner}\n</details>"
    if isinstance(b, Cards):
        cards = "".join(
            f'<div class="card"><div class="label">{_inline(c.label)}</div><div class="value">{_inline(c.value)}'
            f'</div><div class="sub">{_inline(c.sub)}</div></div>' for c in b.cards)
        return f'<div class="cards">{cards}</div>'
    if isinstance(b, Example):
        return _html_example(b)
    raise TypeError(f"unknown report block {type(b).__name__}")


def _html_example(e: Example) -> str:
    sides = []
    for i, a in enumerate(e.answers):
        badges = "".join(f'<span class="badge {kind}">{html.escape(t)}</span>' for t, kind in a.badges)
        text = "".join(f'<mark class="rep">{html.escape(s)}</mark>' if rep else html.escape(s)
                       for s, rep in a.segments)
        body = f'<pre class="answer">{text}</pre>' if text.strip() else \
            '<p class="empty">(empty answer: no content was generated)</p>'
        cut = f'<div class="cut">… {a.cut_chars:,} more characters not shown</div>' if a.cut_chars else ""
        sides.append(f'<div class="side s{i}"><h4>{html.escape(a.label)}</h4><div>{badges}</div>{body}{cut}</div>')
    why = f' <span class="why">· {html.escape(e.why)}</span>' if e.why else ""
    return (f'<div class="example"><div class="head">{html.escape(e.title)}{why}</div>'
            f'<div class="question"><b>Question:</b> {html.escape(e.question)}</div>'
            f'<div class="sides">{"".join(sides)}</div></div>')


def to_html(doc: Document) -> str:
    toc = "".join(f'<a href="#{s.id}"{" class=missing" if s.missing else ""}>{html.escape(s.title)}</a>'
                  for s in doc.sections)
    sub = "".join(f"<p>{_inline(x)}</p>" for x in doc.subtitle)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(doc.title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f'<header class="top"><div class="inner"><h1>{html.escape(doc.title)}</h1>{sub}'
        f'<nav class="toc">{toc}</nav></div></header>', "<main>",
    ]
    for s in doc.sections:
        cls = ' class="missing"' if s.missing else ""
        parts.append(f'<section id="{s.id}"{cls}><h2>{html.escape(s.title)}</h2>')
        parts.extend(_html_block(b) for b in s.blocks)
        parts.append("</section>")
    parts += ["<footer>Written by <code>nift report</code>; every number above is read from the files of the run."
              "</footer>", "</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------- Markdown


def _md_text(s: str) -> str:
    """Text from the run (questions, names) as Markdown text: no raw HTML (IFEval asks for <<titles>>)."""
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(s: str) -> str:
    return _md_text(s).replace("|", "\\|").replace("\n", " ")


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _md_block(b) -> list[str]:
    if isinstance(b, Para):
        prefix = {"note": "> ", "missing": "> **Missing:** "}.get(b.kind, "")
        return [prefix + b.text, ""]
    if isinstance(b, Table):
        align = b.align or ("l" + "r" * (len(b.columns) - 1))
        lines = ["| " + " | ".join(_md_cell(c) for c in b.columns) + " |",
                 "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
        if b.caption:
            lines += ["", f"*{b.caption}*"]
        return [*lines, ""]
    if isinstance(b, Figure):
        lines = [f"![{b.alt}]({b.name})", ""]
        return lines + ([f"*{b.caption}*", ""] if b.caption else [])
    if isinstance(b, Code):
        f = _fence(b.text)
        return [f + b.lang, b.text.rstrip("\n"), f, ""]
    if isinstance(b, Details):
        out = [f"**{b.summary}**", ""]
        for x in b.blocks:
            out += _md_block(x)
        return out
    if isinstance(b, Cards):
        return ["| " + " | ".join(_md_cell(c.label) for c in b.cards) + " |",
                "|" + "---|" * len(b.cards),
                "| " + " | ".join(_md_cell(f"**{c.value}**" + (f" ({c.sub})" if c.sub else "")) for c in b.cards)
                + " |", ""]
    if isinstance(b, Example):
        out = [f"#### {b.title}" + (f" — {b.why}" if b.why else ""), "", "**Question:**", ""]
        out += ["> " + _md_text(line) for line in b.question.splitlines() or [""]]
        out.append("")
        for a in b.answers:
            text = "".join(s for s, _ in a.segments)
            out += [f"**{a.label}** — " + " · ".join(t for t, _ in a.badges), ""]
            if text.strip():
                f = _fence(text)
                out += [f + "text", text.rstrip("\n"), f]
            else:
                out.append("*(empty answer: no content was generated)*")
            if a.cut_chars:
                out.append(f"*… {a.cut_chars:,} more characters not shown*")
            out.append("")
        return out
    raise TypeError(f"unknown report block {type(b).__name__}")


def to_markdown(doc: Document) -> str:
    lines = [f"# {doc.title}", ""]
    for x in doc.subtitle:
        lines += [x, ""]
    lines += ["Contents: " + " · ".join(f"[{s.title}](#{s.id})" for s in doc.sections), ""]
    for s in doc.sections:
        lines += [f'<a id="{s.id}"></a>', "", f"## {s.title}", ""]
        for b in s.blocks:
            lines += _md_block(b)
    lines += ["---", "", "*Written by `nift report`; every number above is read from the files of the run.*", ""]
    return "\n".join(lines)


def figures(doc: Document) -> Iterable[Figure]:
    """Every figure of the document (the PNGs written beside report.md)."""

    def walk(blocks):
        for b in blocks:
            if isinstance(b, Figure):
                yield b
            elif isinstance(b, Details):
                yield from walk(b.blocks)

    for s in doc.sections:
        yield from walk(s.blocks)

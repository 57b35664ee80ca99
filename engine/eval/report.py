"""The comparison report: for candidates evaluated on the same sets, one table per set of their quality
(the scores, the judge against the base, the forgetting check), what each cost to train (wall time,
tokens/s, peak memory measured, trainable parameters) and to deploy (size on disk, chat tokens/s with
the adapter and merged), a plot of quality against peak training memory, and a few examples where each
candidate beat the base and where it fell behind (``engine.eval.report_tables`` assembles them).

Written as one self-contained HTML file (its style and plot inside it, no link to anything, every
user's string escaped) or as Markdown with each plot in an SVG file beside it. It only renders results
documents (``engine.eval.results``); it evaluates nothing.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

from engine.adapters.library import now
from engine.core.atomic import write_text
from engine.errors import StudioError
from engine.eval.report_tables import (
    MISSING,
    Column,
    Plot,
    Table,
    answer_text,
    build_tables,
    example_place,
    prompt_text,
    quality_plot,
    set_line,
    table_columns,
    won_and_lost,
)

EXAMPLES_SHOWN = 3  # per candidate, where it won and where it lost
SUFFIXES = (".html", ".md")


# HTML --------------------------------------------------------------------------------------------


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } .meta, .note { color: #555; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f2f4f7; } th.group { text-align: center; }
td:first-child, td:nth-child(2) { text-align: left; }
td.best { font-weight: bold; background: #eaf5ea; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
.example { border: 1px solid #ddd; border-radius: 4px; padding: 0.5em 0.8em; margin: 0.6em 0; }
.example pre { white-space: pre-wrap; margin: 0.2em 0 0.6em; font-family: inherit; background: #fafafa; padding: 4px; }
.won { border-left: 4px solid #3a9d3a; } .lost { border-left: 4px solid #c0392b; }
"""

_LEGEND = ("↑ higher is better, ↓ lower is better; bold is the best of its column. The judge's win rate counts a "
           "tie as half, against the base, with its 95% interval. Forgetting: the mean per-token KL divergence "
           f"from the base on general prompts, and the share of their answers that changed. {MISSING} not measured.")


# Said where the plot would be, so that a report without one does not look cut short.
NO_PLOT = ("No plot of quality against training memory: no candidate here has a measured peak memory "
           "(an adapter trained elsewhere, or imported, has no run folder to read it from).")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def render_html(tables: list[Table], examples: int = EXAMPLES_SHOWN) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>Evaluation report</title>", f"<style>{_STYLE}</style></head><body>",
             "<h1>Evaluation report</h1>",
             f'<p class="meta">Made by LoRA Studio on {_e(now().replace("T", " ")[:16])} UTC: '
             f"{len(tables)} evaluation set{'s' if len(tables) != 1 else ''}.</p>"]
    for table in tables:
        parts.append(f"<section><h2>{_e(table.evalset['name'])}</h2><p class=\"meta\">{_e(set_line(table))}</p>")
        parts.append(_html_table(table_columns(table)))
        parts.append(f'<p class="note">{_e(_LEGEND)}</p>')
        plot = quality_plot(table)
        if plot is not None:
            parts.append(f"<figure>{plot.svg}<figcaption>{_e(plot.caption)}</figcaption></figure>")
        else:
            parts.append(f'<p class="note">{_e(NO_PLOT)}</p>')
        parts.append(_html_examples(table, examples))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(columns: list[Column]) -> str:
    groups: list[tuple[str, int]] = []
    for column in columns:
        if groups and groups[-1][0] == column.group:
            groups[-1] = (column.group, groups[-1][1] + 1)
        else:
            groups.append((column.group, 1))
    head = "".join(f'<th class="group" colspan="{span}">{_e(group)}</th>' for group, span in groups)
    titles = "".join(f"<th>{_e(column.title)}</th>" for column in columns)
    body = []
    for index in range(len(columns[0].cells)):
        cells = []
        for column in columns:
            cell = column.cells[index]
            attributes = (' class="best"' if cell.best else "") + (f' title="{_e(cell.tip)}"' if cell.tip else "")
            cells.append(f"<td{attributes}>{_e(cell.text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr><tr>{titles}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _html_examples(table: Table, count: int) -> str:
    shown = [(row, won_and_lost(row, table.headline, count)) for row in table.rows if not row.is_base]
    if not any(won or lost for _, (won, lost) in shown):
        return ""
    parts = ["<h3>Examples</h3>"]
    for row, (won, lost) in shown:
        for title, picked in ((f"Where {row.label} beat the base", won), (f"Where {row.label} fell behind", lost)):
            if not picked:
                continue
            parts.append(f"<h4>{_e(title)}</h4>")
            for item in picked:
                example = item.example
                parts.append(f'<div class="example {item.verdict}"><p><b>{_e(example_place(example))}</b>: '
                             f"{_e(item.why)}</p>")
                parts.append(f"<p>Prompt</p><pre>{_e(prompt_text(example))}</pre>")
                if isinstance(example.get("reference"), str):
                    parts.append(f"<p>Reference</p><pre>{_e(example['reference'])}</pre>")
                parts.append(f"<p>{_e(item.base)}</p><pre>{_e(answer_text(example, item.base))}</pre>")
                parts.append(f"<p>{_e(item.candidate)}</p><pre>{_e(answer_text(example, item.candidate))}</pre></div>")
    return "\n".join(parts)


# Markdown -----------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    """Text in a Markdown table cell: no line breaks, no column separators, no raw HTML."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _md_quote(text: str) -> str:
    return "\n".join(f"> {html.escape(line, quote=False)}" for line in (text or MISSING).splitlines() or [""])


def render_markdown(tables: list[Table], plots: dict[int, tuple[str, Plot]], examples: int = EXAMPLES_SHOWN) -> str:
    """The report as Markdown; ``plots`` gives, by table index, the name of the SVG file written beside
    it and its plot."""
    parts = ["# Evaluation report", "",
             f"Made by LoRA Studio on {now().replace('T', ' ')[:16]} UTC: {len(tables)} evaluation "
             f"set{'s' if len(tables) != 1 else ''}.", ""]
    for index, table in enumerate(tables):
        parts += [f"## {_md_cell(table.evalset['name'])}", "", _md_cell(set_line(table)), ""]
        columns = table_columns(table)
        parts.append("| " + " | ".join(_md_cell(f"{c.group}: {c.title}" if c.group else c.title)
                                       for c in columns) + " |")
        parts.append("| " + " | ".join("---" if n < 2 else "---:" for n in range(len(columns))) + " |")
        for row in range(len(columns[0].cells)):
            cells = [column.cells[row] for column in columns]
            parts.append("| " + " | ".join(f"**{_md_cell(c.text)}**" if c.best else _md_cell(c.text)
                                           for c in cells) + " |")
        parts += ["", _md_cell(_LEGEND), ""]
        if index in plots:
            name, plot = plots[index]
            # The <...> form of a link takes a file name with spaces.
            parts += [f"![quality against peak training memory](<{name}>)", "", _md_cell(plot.caption), ""]
        else:
            parts += [_md_cell(NO_PLOT), ""]
        parts += _md_examples(table, examples)
    return "\n".join(parts).rstrip() + "\n"


def _md_examples(table: Table, count: int) -> list[str]:
    shown = [(row, won_and_lost(row, table.headline, count)) for row in table.rows if not row.is_base]
    if not any(won or lost for _, (won, lost) in shown):
        return []
    parts = ["### Examples", ""]
    for row, (won, lost) in shown:
        for title, picked in ((f"Where {row.label} beat the base", won), (f"Where {row.label} fell behind", lost)):
            if not picked:
                continue
            parts += [f"#### {_md_cell(title)}", ""]
            for item in picked:
                example = item.example
                parts += [f"**{_md_cell(example_place(example))}**: {_md_cell(item.why)}", "", "Prompt:", "",
                          _md_quote(prompt_text(example)), ""]
                if isinstance(example.get("reference"), str):
                    parts += ["Reference:", "", _md_quote(example["reference"]), ""]
                parts += [f"{_md_cell(item.base)}:", "", _md_quote(answer_text(example, item.base)), "",
                          f"{_md_cell(item.candidate)}:", "", _md_quote(answer_text(example, item.candidate)), ""]
    return parts


# writing ------------------------------------------------------------------------------------------


def write_report(results_docs: Sequence[dict[str, Any]], output: Path, *, examples: int = EXAMPLES_SHOWN) -> Path:
    """Write the report on ``results_docs`` (results documents, ``engine.eval.results``) to ``output``:
    ``.html``, one self-contained file; ``.md``, Markdown with each plot as ``<name>-plot-N.svg`` beside
    it. Every file is written atomically (the plots before the page that shows them)."""
    output = Path(output)
    if output.suffix.lower() not in SUFFIXES:
        raise StudioError(f"a report is written as .html or .md: {output.name} is neither")
    if not output.parent.is_dir():
        raise StudioError(f"the folder {output.parent} does not exist: choose another place for the report")
    tables = build_tables(results_docs)
    if output.suffix.lower() == ".html":
        write_text(output, render_html(tables, examples))
        return output
    plots: dict[int, tuple[str, Plot]] = {}
    for index, table in enumerate(tables):
        plot = quality_plot(table, standalone=True)
        if plot is not None:
            name = f"{output.stem}-plot-{index + 1}.svg"
            write_text(output.with_name(name), plot.svg + "\n")
            plots[index] = (name, plot)
    write_text(output, render_markdown(tables, plots, examples))
    return output

"""LaTeX tables (booktabs) for the paper: the leaderboard and the FO-vs-SO comparison.

Both need ``\\usepackage{booktabs}`` only. Names are shown as in the figures (``GA``, ``AdamW``;
unknown ids as typed), every user-given text is escaped. Numbers use about three significant
digits like the markdown tables; exponents are typeset as ``1.2$\\times10^{-5}$``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from soul_bench.report.columns import (MetricColumn, as_number, display_name, format_value, headline_columns,
                                       metric_columns)
from soul_bench.report.ranking import best_cells
from soul_bench.report.rows import baseline_label, check_spread, seeds_text, spread_of
from soul_bench.report.stats import DEFAULT_LEVEL, format_p, pooled_target_count

DASH = "--"
UP, DOWN = r"$\uparrow$", r"$\downarrow$"
WIDE_AFTER = 5  # more metric columns than this: a two-column-wide table*

_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
}
_UNICODE = {  # symbols pdflatex does not take as text
    "↑": UP, "↓": DOWN, "→": r"$\rightarrow$", "←": r"$\leftarrow$", "±": r"$\pm$", "×": r"$\times$",
    "≤": r"$\leq$", "≥": r"$\geq$", "·": r"$\cdot$", "−": "$-$", "Δ": r"$\Delta$", "…": r"\ldots{}",
    "–": DASH, "—": "---",
}
_ESCAPE_RE = re.compile("|".join(re.escape(k) for k in _ESCAPES))


def escape(text: Any) -> str:
    """``text`` safe in LaTeX text mode (``_`` → ``\\_``, ``&`` → ``\\&``, unicode arrows → math)."""
    out = _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], str(text))
    for char, tex in _UNICODE.items():
        out = out.replace(char, tex)
    return out


def number(value: Any, signed: bool = False) -> str:
    """A value as LaTeX text: '0.412', '1.2$\\times10^{-5}$', '$-$0.3', '--' when missing."""
    v = as_number(value)
    if v is None:
        return DASH
    text = format_value(v)
    if signed and v > 0:
        text = "+" + text
    if text in ("inf", "-inf"):
        return r"$\infty$" if v > 0 else r"$-\infty$"
    m = re.fullmatch(r"([+-]?)([0-9.]+)e([+-])0*([0-9]+)", text)
    if m:
        sign, mant, esign, exp = m.groups()
        text = f"{sign}{mant}$\\times10^{{{'-' if esign == '-' else ''}{exp}}}$"
    if text.startswith("-"):
        text = "$-$" + text[1:]
    return text


def _header(m: MetricColumn) -> str:
    return f"{escape(m.label)} {escape(m.arrow)}"


def _name(value: Any) -> str:
    return escape(display_name(value)) if value is not None else DASH


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9:._-]+", "-", text).strip("-")


def _table_env(n_metric_cols: int, wide: bool | None) -> str:
    if wide is None:
        wide = n_metric_cols > WIDE_AFTER
    return "table*" if wide else "table"


def leaderboard_latex(rows: Sequence[Mapping], metrics: Iterable[Any], title: str, *, spread: str = "ci",
                      level: float = DEFAULT_LEVEL, headline_only: bool = False, label: str = "tab:leaderboard",
                      wide: bool | None = None) -> str:
    """A booktabs ``table`` of leaderboard rows (from :func:`leaderboard.leaderboard_rows`).

    Columns: rank, method, optimizer, seeds, then the metrics (headline first), each
    ``mean {\\scriptsize ± spread}`` with ``spread`` = "ci" (the ``level`` t-interval half-width,
    ``rows["ci"]``) or "std"; the best unlearned mean per column in ``\\textbf``; baselines in
    italics above a rule; cells with no successful seed at the bottom with their reason; a
    cell that misses a ranking requirement (``row["unmet"]``) gets a dagger on its rank, since
    its place below better means would otherwise be unexplained in the paper.
    More than five metric columns (or ``wide=True``) make it a two-column ``table*`` whose
    tabular is scaled to ``\textwidth`` (``\resizebox``, needs graphicx).
    """
    check_spread(spread)
    specs = metric_columns(metrics)
    specs = headline_columns(specs) if headline_only else specs
    rows = list(rows)
    best = best_cells(rows, specs)
    env = _table_env(len(specs), wide)
    resize = env == "table*"
    spread_text = (f"{level * 100:g}\\,\\% Student-t confidence-interval half-width" if spread == "ci"
                   else "sample standard deviation")
    caption = (f"{escape(title)}. Mean $\\pm$ {spread_text} over seeds (none with one seed); "
               f"\\textbf{{bold}}: best unlearned value per column; {UP}/{DOWN}: higher/lower is better"
               + ("; $\\rightarrow v$: closest to $v$ is best" if any(m.ideal is not None for m in specs) else "")
               + ("; the optimizer's tuned setting in brackets (chosen among those tried)"
                  if any(row.get("n_settings", 1) > 1 for row in rows) else "")
               + ("; $^\\dagger$: misses a ranking requirement, so ranked after the cells that meet them all"
                  if any(row.get("unmet") for row in rows) else "") + ".")
    lines = [
        "% soul-bench leaderboard; needs \\usepackage{booktabs}" + (" and \\usepackage{graphicx}" if resize else ""),
        f"\\begin{{{env}}}[t]",
        "  \\centering",
        "  \\small",
        f"  \\caption{{{caption}}}",
        f"  \\label{{{_label(label)}}}",
        "  \\setlength{\\tabcolsep}{4pt}",
        *(["  \\resizebox{\\textwidth}{!}{%"] if resize else []),
        f"  \\begin{{tabular}}{{rllr{'r' * len(specs)}}}",
        "    \\toprule",
        "    " + " & ".join(["\\#", "Method", "Optimizer", "Seeds", *(_header(m) for m in specs)]) + " \\\\",
        "    \\midrule",
    ]
    previous_kind = None
    for i, row in enumerate(rows):
        group = "base" if row["kind"] != "unlearned" else ("ok" if row["status"] == "ok" else "bad")
        if previous_kind is not None and group != previous_kind:
            lines.append("    \\midrule")
        previous_kind = group
        if row["kind"] == "unlearned":
            method, optimizer = _name(row["method"]), _name(row["optimizer"])
            if row.get("setting") and row.get("n_settings", 1) > 1:  # the tuned values chosen
                optimizer += f" {{\\scriptsize({escape(row['setting'])})}}"
        else:
            method, optimizer = f"\\textit{{{escape(baseline_label(row))}}}", DASH
        rank = str(row["rank"]) if row["rank"] is not None else DASH
        if row.get("unmet"):
            rank += "$^\\dagger$"
        cells = [rank, method, optimizer, escape(seeds_text(row))]
        if row["status"] != "ok":
            cells.append(f"\\multicolumn{{{len(specs)}}}{{l}}{{\\textit{{{escape(row['status'])}}}}}"
                         if specs else "")
        else:
            for m in specs:
                mean = row["mean"].get(m.name)
                text = number(mean)
                if i in best.get(m.name, ()):
                    text = f"\\textbf{{{text}}}"
                half = spread_of(row, m.name, spread)
                if mean is not None and half is not None:
                    text += f" {{\\scriptsize$\\pm$\\,{number(half)}}}"
                cells.append(text)
        lines.append("    " + " & ".join(cells) + " \\\\")
    if not rows:
        lines.append(f"    \\multicolumn{{{4 + len(specs)}}}{{c}}{{\\textit{{no records}}}} \\\\")
    lines += ["    \\bottomrule", "  \\end{tabular}" + ("}" if resize else ""), f"\\end{{{env}}}", ""]
    return "\n".join(lines)


def fo_vs_so_latex(rows: Sequence[Mapping], title: str, *, level: float = DEFAULT_LEVEL,
                   label: str = "tab:fo-vs-so", alpha: float = 0.05) -> str:
    """A booktabs table of :func:`stats.optimizer_comparison_rows`: per method × optimizer, each
    headline metric's mean difference (optimizer − baseline) over paired seeds, its t-interval,
    the paired t-test p (bold below ``alpha``) and the Wilcoxon signed-rank p; "n/a" with fewer
    than three paired seeds. Records pooled over several targets add the mean difference within
    each target (``by_target``), as the markdown table does."""
    rows = list(rows)
    n_targets = pooled_target_count(rows)
    baselines = sorted({str(r["baseline"]) for r in rows})
    base = ", ".join(display_name(b) for b in baselines) or "the baseline"
    caption = (f"{escape(title)}. Each optimizer vs {escape(base)} on the same seeds: "
               f"$\\Delta$ = mean over paired seeds of (optimizer $-$ {escape(base)}); "
               f"{level * 100:g}\\,\\% paired t-interval; p: two-sided paired t-test (\\textbf{{bold}} "
               f"if $p<{alpha:g}$); $p_W$: Wilcoxon signed-rank; n/a with fewer than 3 paired seeds; "
               f"{UP}/{DOWN}: higher/lower is better; "
               + ("$\\rightarrow v$: the mean closer to $v$ is better; " if any(r.get("ideal") is not None for r in rows)
                  else "")
               + (f"$\\Delta$ per target: the paired mean within each target model "
                  f"({' / '.join(f'T{t}' for t in range(n_targets))}; pairs are (target, seed)); " if n_targets else "")
               + "no multiple-comparison correction.")
    per_target_header = "$\\Delta$ per target & " if n_targets else ""
    lines = [
        "% soul-bench FO vs SO comparison; needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "  \\centering",
        "  \\small",
        f"  \\caption{{{caption}}}",
        f"  \\label{{{_label(label)}}}",
        "  \\setlength{\\tabcolsep}{4pt}",
        f"  \\begin{{tabular}}{{lllrr{'r' if n_targets else ''}crr}}",
        "    \\toprule",
        f"    Method & Optimizer & Metric & $n$ & $\\Delta$ & {per_target_header}"
        f"{level * 100:g}\\,\\% CI & $p$ & $p_W$ \\\\",
        "    \\midrule",
    ]
    previous = None
    for r in rows:
        group = (r["method"], r["optimizer"])
        first = group != previous
        if first and previous is not None:
            lines.append("    \\addlinespace")
        previous = group
        arrow = escape(r["arrow"]) if r.get("arrow") else (UP if r["higher"] else DOWN)
        ci = (f"[{number(r['ci_low'], signed=True)}, {number(r['ci_high'], signed=True)}]"
              if r["ci_low"] is not None else "n/a")
        p = format_p(r["p_value"])
        p = escape(p)
        if r["p_value"] is not None and r["p_value"] < alpha:
            p = f"\\textbf{{{p}}}"
        cells = [_name(r["method"]) if first else "", _name(r["optimizer"]) if first else "",
                 f"{escape(r['label'])} {arrow}", str(r["n"]), number(r["mean_diff"], signed=True)]
        if n_targets:
            cells.append(" / ".join(number(d, signed=True) if d is not None else "n/a" for d in r.get("by_target") or ()))
        cells += [ci, p, escape(format_p(r["p_wilcoxon"]))]
        lines.append("    " + " & ".join(cells) + " \\\\")
    if not rows:
        lines.append("    \\multicolumn{8}{c}{\\textit{no method has both the baseline and another optimizer}} \\\\")
    lines += ["    \\bottomrule", "  \\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)

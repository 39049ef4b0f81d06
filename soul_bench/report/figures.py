"""Paper figures from result records (matplotlib, Agg; every figure saved as PNG and PDF).

One style for all of them: single-column width (3.5 in), 7 pt text, the Okabe-Ito palette,
axis labels that say which way is better, legends outside the axes. Figures carry no title
(the paper's caption does that); pass ``title=`` to add one.

* :func:`tradeoff_figure` — metric x vs metric y, one point per (method, optimizer) with
  error bars (95 % CI by default), the baselines, and the Pareto front of the unlearned cells
  as a dashed step line. With ``log_y=True`` on (model utility, forget quality) it is TOFU's
  forget-quality-vs-utility figure. :func:`tradeoff_scatter` draws it from two resolved
  metric columns (``leaderboard.write_leaderboard`` uses it for ``tradeoff.png``).
* :func:`bars_figure` — one panel per headline metric: method groups × optimizer bars, error
  bars = CI, seeds as dots, target / retain as horizontal reference lines.
* :func:`curves_figure` — a train-log quantity (loss, or a logged term such as ``ce_forget``)
  vs step; one panel per method, one line per optimizer, mean over seeds with a ±1 s.d. band.
* :func:`mia_roc_figure` — ROC curves of one membership-inference attack from
  ``per_item["mia"][attack] = {"fpr": [...], "tpr": [...]}``; one panel per method, one line
  per optimizer (mean TPR over seeds on a common FPR grid), baselines in black.
* :func:`write_figures` — all of them into a folder, atomically; returns name → path.

Colour encodes the method in the trade-off scatter (marker = optimizer), and the optimizer
everywhere else (the panels are the methods there).

A metric with an ideal value (an MIA AUC best at 0.5) is plotted as its raw value, with a dotted
guide at the ideal, and its axis label says "(best at 0.5)". The Pareto front then treats that
axis as "smaller distance to the ideal is better": membership is computed on −|v − ideal|, and
since a step line in raw values would not bound the dominated region any more (it folds at the
ideal), the front cells are ringed instead of joined.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soul_bench.report.columns import (DEFAULT_TRADEOFF, MetricColumn, as_number, display_name, headline_columns,
                                       metric_columns, record_kind, tradeoff_axes)
from soul_bench.report.files import atomic_write
from soul_bench.report.rows import CI_LEVEL, baseline_order, check_spread, row_name, spread_of

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIG_WIDTH_IN = 3.5  # one column of a two-column paper
FIG_DPI = 200

# Okabe & Ito (2008), colour-blind-safe; yellow last because it is faint on white.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
OPTIMIZER_MARKERS = ("o", "s", "^", "D", "v", "P", "<", ">", "h", "p")
BASELINE_STYLE = {  # kind -> (marker, size); any other baseline kind is a diamond
    "target": ("X", 6.5),
    "retain": ("*", 9.0),
}
OTHER_BASELINE_STYLE = ("d", 5.5)
# A Pareto-front cell when an axis has an ideal value: a grey ring around its marker.
_RING = {"marker": "o", "linestyle": "none", "ms": 9.0, "mfc": "none", "mec": "0.3", "mew": 0.8, "zorder": 3}
IDEAL_GUIDE = {"color": "0.55", "linestyle": (0, (1, 2)), "linewidth": 0.7}  # where an ideal-valued metric is best

FIG_RC = {"font.size": 7, "axes.titlesize": 7.5, "axes.labelsize": 7, "xtick.labelsize": 6.5,
          "ytick.labelsize": 6.5, "legend.fontsize": 6.5, "legend.title_fontsize": 6.5,
          "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
          "xtick.minor.width": 0.4, "ytick.minor.width": 0.4, "lines.linewidth": 1.0,
          "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}
FORMATS = ("png", "pdf")
TRAIN_LOG_SKIP = ("step", "lr", "grad_norm")  # logged, but not unlearning terms; nor are timings (*_s)

# How a logged quantity is labelled on the y axis, and which way is good (rotated: → reads as up).
TERM_INFO: dict[str, tuple[str, str]] = {
    "loss": ("Unlearning loss", "(minimised)"),
    "ce_forget": ("Forget CE", "(more forgetting →)"),
    "nll_forget": ("Forget NLL", "(more forgetting →)"),
    "ce_retain": ("Retain CE", "(← better)"),
    "npo": ("NPO loss term", "(minimised)"),
    "simnpo": ("SimNPO loss term", "(minimised)"),
    "grad_norm": ("Gradient norm", ""),
}
ATTACK_NAMES = {"loss": "LOSS", "zlib": "ZLib", "min_k": "Min-K%", "min_k_plus_plus": "Min-K%++",
                "reference": "Reference", "gradnorm": "GradNorm"}
BASELINE_LINES = {"target": ("black", (0, (4, 2))), "retain": ("black", (0, (1, 1.5)))}


# --------------------------------------------------------------------------- helpers


def _new_figure(height: float, width: float = FIG_WIDTH_IN) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=FIG_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style():
    import matplotlib

    return matplotlib.rc_context(FIG_RC)


def _finish_axes(ax: "Axes") -> None:
    ax.grid(True, which="major", linewidth=0.4, alpha=0.35)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _empty(text: str) -> "Figure":
    fig = _new_figure(1.2)
    fig.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def _optimizer_colours(optimizers: Sequence[str]) -> dict[str, str]:
    return {o: OKABE_ITO[i % len(OKABE_ITO)] for i, o in enumerate(optimizers)}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def _ok_unlearned(records: Iterable[Mapping]) -> list[Mapping]:
    return [r for r in records if record_kind(r) == "unlearned" and r.get("status") == "ok"]


def save_figure(fig: "Figure", out_dir: str | Path, stem: str, formats: Sequence[str] = FORMATS) -> dict[str, Path]:
    """Write ``<stem>.png`` / ``<stem>.pdf`` atomically; returns {"<stem>.png": path, ...}."""
    out = Path(out_dir)
    paths = {}
    engine = fig.get_layout_engine()
    if len(formats) > 1 and engine is not None:
        # Solve the layout once for every format (the constrained-layout solver is most of a
        # figure's drawing time, and it lays out in inches, so the result is the same in each)
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
    try:
        for fmt in formats:
            meta = {"Software": None} if fmt == "png" else {"Creator": None, "Producer": None, "CreationDate": None}
            path = out / f"{stem}.{fmt}"
            paths[path.name] = atomic_write(
                path, lambda fh, fmt=fmt, meta=meta: fig.savefig(fh, format=fmt, dpi=FIG_DPI, metadata=meta))
    finally:  # a caller that edits the figure and saves it again gets a fresh layout
        if engine is not None and fig.get_layout_engine() is not engine:
            fig.set_layout_engine(engine)
    return paths


def _legend_top(fig: "Figure", handles: list, title: str | None = None, ncol: int | None = None) -> None:
    if not handles:
        return
    ncol = ncol or min(len(handles), 4)
    fig.legend(handles=handles, labels=[h.get_label() for h in handles], loc="outside upper center", ncol=ncol,
               frameon=False, title=title, handlelength=1.6, handletextpad=0.4, columnspacing=1.0,
               borderaxespad=0.1)


# --------------------------------------------------------------------------- (a)/(e) trade-off


def _legend_rows(items: list[Any], ncol: int) -> list[list[Any]]:
    return [items[i:i + ncol] for i in range(0, len(items), ncol)]


def pareto_front(points: Sequence[tuple[float, float]], x_higher: bool = True,
                 y_higher: bool = True) -> list[int]:
    """Indices of the non-dominated points (better-or-equal on both axes, strictly better on one
    dominates), sorted by x ascending. Exact duplicates all stay on the front."""
    sx = 1.0 if x_higher else -1.0
    sy = 1.0 if y_higher else -1.0
    good = [(sx * x, sy * y) for x, y in points]
    front = [i for i, (gx, gy) in enumerate(good)
             if not any(hx >= gx and hy >= gy and (hx > gx or hy > gy) for hx, hy in good)]
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def pareto_staircase(points: Sequence[tuple[float, float]], x_higher: bool = True,
                     y_higher: bool = True) -> tuple[list[float], list[float]]:
    """The front drawn as a step line: front points joined through the inner (worse-worse) corners,
    i.e. the boundary of the region the front dominates."""
    front = [points[i] for i in pareto_front(points, x_higher, y_higher)]
    xs, ys = [], []
    for k, (x, y) in enumerate(front):
        if k:
            px, py = front[k - 1]
            xs.append(min(px, x) if x_higher else max(px, x))
            ys.append(min(py, y) if y_higher else max(py, y))
        xs.append(x)
        ys.append(y)
    return xs, ys


def draw_interval(ax: Any, x: float, y: float, half: float | None, axis: str, log: bool, floor: float,
                  colour: Any, zorder: float = 2.5, capsize: float = 1.5, linewidth: float = 0.8) -> bool:
    """Error bar ``value ± half`` along ``axis`` ("x"/"y") at (x, y). On a log axis an interval reaching
    ≤ ``floor`` (e.g. a CI crossing 0) is drawn to the floor, without a cap, ending in a caret
    (▾ / ◂). Returns whether it was cut so."""
    if half is None:
        return False
    value = x if axis == "x" else y
    cut = log and value - half <= floor
    below = max(value - floor, 0.0) if cut else half
    kw = {"fmt": "none", "ecolor": colour, "elinewidth": linewidth, "capthick": linewidth, "zorder": zorder}
    ax.errorbar([x], [y], capsize=capsize, **{f"{axis}err": [[0.0], [half]]}, **kw)
    ax.errorbar([x], [y], capsize=0.0 if cut else capsize, **{f"{axis}err": [[below], [0.0]]}, **kw)
    if cut:
        ax.plot([floor if axis == "x" else x], [y if axis == "x" else floor], marker="<" if axis == "x" else "v",
                ms=3.0, color=colour, linestyle="none", zorder=zorder, clip_on=False)
    return cut


def tradeoff_scatter(rows: list[dict], axes: tuple[MetricColumn, MetricColumn] | None, title: str, *,
                     spread: str = "std", pareto: bool = False, log_x: bool | None = None,
                     log_y: bool | None = None, level: float = CI_LEVEL) -> "Figure":
    """Scatter of the two metrics' means (colour = method, marker = optimizer, baselines in black).

    Error bars: ``spread`` = "std" (sample std over seeds) or "ci" (the ``level`` t-interval
    half-width, as in ``rows["ci"]``). ``pareto`` draws the front of the unlearned cells as a
    dashed step line; when an axis' metric has an ideal value, front membership uses the distance
    to it (smaller is better) and the front cells are ringed instead (see the module docstring).
    ``log_x`` / ``log_y`` override the metrics' own ``log`` flag.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    check_spread(spread)
    with matplotlib.rc_context(FIG_RC):
        if axes is None:
            fig = Figure(figsize=(FIG_WIDTH_IN, 1.2), dpi=FIG_DPI, layout="constrained")
            FigureCanvasAgg(fig)
            fig.text(0.5, 0.5, "trade-off plot needs two metrics", ha="center", va="center")
            return fig
        xm, ym = axes
        xlog = xm.log if log_x is None else bool(log_x)
        ylog = ym.log if log_y is None else bool(log_y)
        notes: list[str] = []

        def coords(row: Mapping) -> tuple[float, float, float | None, float | None] | None:
            x, y = row["mean"].get(xm.name), row["mean"].get(ym.name)
            if x is None or y is None:
                notes.append(f"{row_name(row)}: no {xm.name if x is None else ym.name}")
                return None
            if (xlog and x <= 0) or (ylog and y <= 0):
                notes.append(f"{row_name(row)}: value ≤ 0 on a log axis")
                return None
            return x, y, spread_of(row, xm.name, spread), spread_of(row, ym.name, spread)

        plotted = [(r, c) for r in rows if r["status"] == "ok" and (c := coords(r)) is not None]
        cells = [(r, c) for r, c in plotted if r["kind"] == "unlearned"]
        bases = [(r, c) for r, c in plotted if r["kind"] != "unlearned"]
        methods = sorted({str(r["method"]) for r, _ in cells})
        optimizers = sorted({str(r["optimizer"]) for r, _ in cells})
        colour = {m: OKABE_ITO[i % len(OKABE_ITO)] for i, m in enumerate(methods)}
        marker = {o: OPTIMIZER_MARKERS[i % len(OPTIMIZER_MARKERS)] for i, o in enumerate(optimizers)}
        front = ringed = None
        if pareto and cells:
            if xm.ideal is None and ym.ideal is None:
                front = pareto_staircase([(c[0], c[1]) for _, c in cells], xm.higher, ym.higher)
            else:
                ringed = pareto_front([(xm.score(c[0]), ym.score(c[1])) for _, c in cells])

        ncol = max(1, min(4, max(len(methods), len(optimizers), 1)))
        legend_grid = _legend_rows(methods, ncol) + _legend_rows(optimizers, ncol) + ([["pareto"]] if front or ringed else [])
        height = 2.6 + (0.14 * len(legend_grid) + 0.2 if legend_grid else 0) + (0.12 * len(notes[:3]))
        fig = Figure(figsize=(FIG_WIDTH_IN, height), dpi=FIG_DPI, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if xlog:
            ax.set_xscale("log")
        if ylog:
            ax.set_yscale("log")

        # On a log axis an error bar reaching ≤ 0 is clipped just below the smallest value shown.
        def floor(log: bool, idx: int, sidx: int) -> float:
            vals = [c[idx] for _, c in plotted] + [c[idx] - c[sidx] for _, c in plotted
                                                   if c[sidx] is not None and c[idx] - c[sidx] > 0]
            return min(vals) / 3 if log and vals else 0.0

        x_floor, y_floor = floor(xlog, 0, 2), floor(ylog, 1, 3)

        truncated = False
        if xm.ideal is not None and not (xlog and xm.ideal <= 0):
            ax.axvline(xm.ideal, zorder=1, **IDEAL_GUIDE)
        if ym.ideal is not None and not (ylog and ym.ideal <= 0):
            ax.axhline(ym.ideal, zorder=1, **IDEAL_GUIDE)
        if front:  # above the error bars, below the markers
            ax.plot(*front, color="0.3", linestyle=(0, (3, 1.5)), linewidth=1.0, zorder=3, solid_capstyle="butt")
        for i in ringed or []:
            _, (x, y, _, _) = cells[i]
            ax.plot([x], [y], **_RING)
        for row, (x, y, sx, sy) in cells:
            c = colour[str(row["method"])]
            truncated |= draw_interval(ax, x, y, sx, "x", xlog, x_floor, c, zorder=2.5)
            truncated |= draw_interval(ax, x, y, sy, "y", ylog, y_floor, c, zorder=2.5)
            ax.plot([x], [y], marker=marker[str(row["optimizer"])], linestyle="none", color=c, ms=5,
                    mec="black", mew=0.5, zorder=4)
        ys = [math.log10(c[1]) if ylog else c[1] for _, c in plotted]
        y_mid = (min(ys) + max(ys)) / 2 if ys else 0.0
        for row, (x, y, sx, sy) in bases:
            mk, size = BASELINE_STYLE.get(row["kind"], OTHER_BASELINE_STYLE)
            upper = (math.log10(y) if ylog else y) >= y_mid  # label away from the bulk of the points
            truncated |= draw_interval(ax, x, y, sx, "x", xlog, x_floor, "black", zorder=2.5)
            truncated |= draw_interval(ax, x, y, sy, "y", ylog, y_floor, "black", zorder=2.5)
            ax.plot([x], [y], marker=mk, linestyle="none", color="black", mfc="white", mec="black", mew=0.9,
                    ms=size, zorder=3.8)  # below the cells: a cell on top of a baseline stays visible
            ax.annotate(row_name(row), (x, y), xytext=(0, 6 if upper else -6), textcoords="offset points",
                        fontsize=6.5, style="italic", ha="center", va="bottom" if upper else "top", zorder=5)
        if not plotted:
            ax.text(0.5, 0.5, "no successful cells to plot", transform=ax.transAxes, ha="center", va="center")

        ax.set_xlabel(xm.axis_label)
        ax.set_ylabel(ym.axis_label)
        ax.grid(True, which="major", linewidth=0.4, alpha=0.35)
        ax.margins(0.12)
        if title:
            ax.set_title(title)
        if notes:
            shown = notes[:3] + ([f"… and {len(notes) - 3} more"] if len(notes) > 3 else [])
            ax.text(0.01, 0.01, "not shown: " + "; ".join(shown), transform=ax.transAxes, fontsize=5.5,
                    color="0.35", ha="left", va="bottom")

        if legend_grid:
            blank = Line2D([], [], linestyle="none", label=" ")
            grid = [[Patch(facecolor=colour[m], edgecolor="black", linewidth=0.5, label=display_name(m)) for m in line]
                    for line in _legend_rows(methods, ncol)]
            grid += [[Line2D([], [], linestyle="none", marker=marker[o], ms=5, mfc="0.75", mec="black", mew=0.5,
                             label=display_name(o)) for o in line] for line in _legend_rows(optimizers, ncol)]
            if front:
                grid.append([Line2D([], [], color="0.3", linestyle=(0, (3, 1.5)), linewidth=1.0, label="Pareto front")])
            elif ringed:
                grid.append([Line2D([], [], label="Pareto front", **{**_RING, "ms": 6.5})])
            grid = [line + [blank] * (ncol - len(line)) for line in grid]
            handles = [grid[r][c] for c in range(ncol) for r in range(len(grid))]  # legend fills column-wise
            has_bars = any(c[2] is not None or c[3] is not None for _, c in plotted)
            bars = "" if spread == "std" or not has_bars else f" · bars: {level * 100:g} % CI"
            bars += " (▾ reaches ≤ 0)" if truncated else ""
            fig.legend(handles=handles, labels=[h.get_label() for h in handles], loc="outside lower center",
                       ncol=ncol, frameon=False, title=f"colour: method · marker: optimizer{bars}",
                       handlelength=1.2, handletextpad=0.4, columnspacing=1.0, borderaxespad=0.2)
        return fig



def tradeoff_figure(rows: list[dict], metrics: Iterable[Any], tradeoff: Sequence[str] = DEFAULT_TRADEOFF, *,
                    spread: str = "ci", pareto: bool = True, log_x: bool | None = None,
                    log_y: bool | None = None, title: str | None = None, level: float = CI_LEVEL) -> "Figure":
    """Trade-off scatter of leaderboard rows (see :func:`tradeoff_scatter`) on the metrics named
    ``tradeoff``.

    ``log_x`` / ``log_y`` override the metrics' ``log`` flags; TOFU's figure is
    ``tradeoff=("model_utility", "forget_quality"), log_y=True`` (the card's default already).
    """
    axes = tradeoff_axes(tradeoff, metric_columns(metrics))
    return tradeoff_scatter(rows, axes, title or "", spread=spread, pareto=pareto, log_x=log_x, log_y=log_y,
                            level=level)


# --------------------------------------------------------------------------- (b) grouped bars


def bars_figure(rows: list[dict], metrics: Iterable[Any], *, spread: str = "ci", headline_only: bool = True,
                show_seeds: bool = True, title: str | None = None, level: float = CI_LEVEL) -> "Figure":
    """One panel per (headline) metric: x = method groups, one bar per optimizer (mean over seeds),
    error bars = ``spread`` ("ci": 95 % t-interval, "std"), seeds as dots, baselines as lines."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    specs = metric_columns(metrics)
    specs = headline_columns(specs) if headline_only else specs
    cells = [r for r in rows if r["kind"] == "unlearned" and r["status"] == "ok"]
    bases = [r for r in rows if r["kind"] != "unlearned" and r["status"] == "ok"]
    methods = sorted({str(r["method"]) for r in cells})
    optimizers = sorted({str(r["optimizer"]) for r in cells})
    if not cells or not specs:
        with _style():
            return _empty("no successful cells to plot")
    colour = _optimizer_colours(optimizers)
    by_cell = {(str(r["method"]), str(r["optimizer"])): r for r in cells}
    n_opt = len(optimizers)
    width = 0.8 / n_opt

    truncated = False
    with _style():
        fig = _new_figure(0.45 + 1.25 * len(specs))
        axs = fig.subplots(len(specs), 1, sharex=True, squeeze=False)[:, 0]
        for ax, m in zip(axs, specs):
            # values for this panel, to place the floor of a log axis
            shown = [v for r in cells + bases if (v := r["mean"].get(m.name)) is not None and (not m.log or v > 0)]
            if m.log:
                ax.set_yscale("log")
                lows = [r["mean"][m.name] - h for r in cells
                        if r["mean"].get(m.name) is not None and (h := spread_of(r, m.name, spread)) is not None]
                seeds = [v for r in cells for v in r["values"].get(m.name, []) if v is not None and v > 0]
                positive = [v for v in shown + lows + seeds if v > 0]
                floor = min(positive) / 3 if positive else 1e-3
            else:
                floor = 0.0
            for i, method in enumerate(methods):
                for j, opt in enumerate(optimizers):
                    row = by_cell.get((method, opt))
                    if row is None:
                        continue
                    x = i - 0.4 + width * (j + 0.5)
                    mean = row["mean"].get(m.name)
                    if mean is None or (m.log and mean <= 0):
                        ax.text(x, floor if m.log else 0.0, "n/a", rotation=90, ha="center", va="bottom",
                                fontsize=5, color="0.4")
                        continue
                    ax.bar(x, mean - floor, width=width * 0.92, bottom=floor, color=colour[opt],
                           edgecolor="black", linewidth=0.4, zorder=2)
                    half = spread_of(row, m.name, spread)
                    truncated |= draw_interval(ax, x, mean, half, "y", m.log, floor, "black", zorder=3,
                                                  capsize=1.6, linewidth=0.7)
                    if show_seeds:
                        vals = [v for v in row["values"].get(m.name, []) if v is not None and (not m.log or v > 0)]
                        if len(vals) > 1:
                            offs = [(k - (len(vals) - 1) / 2) * width * 0.5 / max(len(vals) - 1, 1)
                                    for k in range(len(vals))]
                            ax.scatter([x + o for o in offs], vals, s=2.5, color="white", edgecolors="black",
                                       linewidths=0.35, zorder=4)
            for row in bases:
                v = row["mean"].get(m.name)
                if v is None or (m.log and v <= 0):
                    continue
                col, ls = BASELINE_LINES.get(row["kind"], ("0.3", "-."))
                ax.axhline(v, color=col, linestyle=ls, linewidth=0.8, zorder=1.5)
            if m.ideal is not None and not (m.log and m.ideal <= 0):
                ax.axhline(m.ideal, zorder=1.4, **IDEAL_GUIDE)
            if m.log:
                ax.set_ylim(bottom=floor)
            elif all(v >= 0 for v in shown):
                ax.set_ylim(bottom=0.0)
            ax.set_ylabel(m.axis_label.replace(" (", "\n(", 1))
            ax.set_xlim(-0.55, len(methods) - 0.45)
            _finish_axes(ax)
            ax.grid(False, axis="x")
        axs[-1].set_xticks(range(len(methods)), [display_name(m) for m in methods])
        for ax in axs:
            ax.tick_params(axis="x", length=0)
        if title:
            axs[0].set_title(title)
        handles = [Patch(facecolor=colour[o], edgecolor="black", linewidth=0.4, label=display_name(o)) for o in optimizers]
        for kind in sorted({r["kind"] for r in bases}, key=baseline_order):
            col, ls = BASELINE_LINES.get(kind, ("0.3", "-."))
            handles.append(Line2D([], [], color=col, linestyle=ls, linewidth=0.8, label=kind))
        bars = f"{level * 100:g} % CI" if spread == "ci" else "±1 s.d."
        bars += " (▾ reaches ≤ 0)" if truncated else ""
        note = f"bars: mean over seeds · whiskers: {bars}" + (" · dots: seeds" if show_seeds else "")
        _legend_top(fig, handles, title=note, ncol=min(len(handles), 5))
        return fig


# --------------------------------------------------------------------------- (c) curves


def train_log_quantities(records: Iterable[Mapping]) -> list[str]:
    """``loss`` first, then every other numeric key logged by some cell (name order), minus step, lr,
    grad_norm and timings (keys ending in ``_s``, e.g. ``hessian_s``)."""
    keys: set[str] = set()
    for r in _ok_unlearned(records):
        for entry in r.get("train_log") or []:
            if isinstance(entry, Mapping):
                keys.update(k for k, v in entry.items() if k not in TRAIN_LOG_SKIP and not k.endswith("_s")
                            and as_number(v) is not None)
    return (["loss"] if "loss" in keys else []) + sorted(keys - {"loss"})


def _series(record: Mapping, quantity: str) -> tuple[list[int], list[float]]:
    steps, vals = [], []
    for i, entry in enumerate(record.get("train_log") or []):
        if not isinstance(entry, Mapping):
            continue
        v = as_number(entry.get(quantity))
        if v is None or math.isinf(v):
            continue
        step = entry.get("step", i)
        steps.append(int(step) if isinstance(step, (int, float)) else i)
        vals.append(v)
    return steps, vals


def _moving_average(vals: Sequence[float], window: int):
    import numpy as np

    a = np.asarray(vals, dtype=float)
    if window <= 1 or len(a) < 3:
        return a
    window = min(window, len(a))
    kernel = np.ones(window)
    num = np.convolve(a, kernel, mode="same")
    den = np.convolve(np.ones(len(a)), kernel, mode="same")
    return num / den


def _auto_window(n_steps: int) -> int:
    return 1 if n_steps <= 60 else max(1, round(n_steps / 40))


def curves_figure(records: Iterable[Mapping], quantity: str = "loss", *, smooth: int | str | None = "auto",
                  title: str | None = None) -> "Figure":
    """``quantity`` vs step from the successful unlearned cells' ``train_log``.

    One panel per method (two columns), one line per optimizer: the mean over seeds at each
    step (of the seeds that logged it) with a ±1 s.d. band. ``smooth``: a centred moving-average
    window in steps (applied per seed before averaging), ``"auto"`` (≈ steps/40 when there are
    more than 60 steps) or None.
    """
    import numpy as np
    from matplotlib.lines import Line2D

    records = _ok_unlearned(records)
    by_cell: dict[tuple[str, str], list[tuple[list[int], list[float]]]] = {}
    for r in records:
        steps, vals = _series(r, quantity)
        if steps:
            by_cell.setdefault((str(r.get("method")), str(r.get("optimizer"))), []).append((steps, vals))
    methods = sorted({m for m, _ in by_cell})
    optimizers = sorted({o for _, o in by_cell})
    label, direction = TERM_INFO.get(quantity, (quantity, ""))
    if not by_cell:
        with _style():
            return _empty(f"no '{quantity}' in any train_log")
    n_steps = max(len(s) for runs in by_cell.values() for s, _ in runs)
    window = _auto_window(n_steps) if smooth == "auto" else int(smooth or 1)
    colour = _optimizer_colours(optimizers)
    ncols = 1 if len(methods) == 1 else 2
    nrows = math.ceil(len(methods) / ncols)

    with _style():
        fig = _new_figure(0.55 + (1.25 if ncols == 2 else 1.9) * nrows)
        axs = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
        for k, method in enumerate(methods):
            ax = axs[k // ncols][k % ncols]
            for opt in optimizers:
                runs = by_cell.get((method, opt))
                if not runs:
                    continue
                grid = sorted({s for steps, _ in runs for s in steps})
                index = {s: i for i, s in enumerate(grid)}
                mat = np.full((len(runs), len(grid)), np.nan)
                for i, (steps, vals) in enumerate(runs):
                    mat[i, [index[s] for s in steps]] = _moving_average(vals, window)
                count = np.sum(~np.isnan(mat), axis=0)
                mean = np.nanmean(mat, axis=0)
                ax.plot(grid, mean, color=colour[opt], linewidth=1.0, zorder=3)
                if len(runs) > 1:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        sd = np.where(count > 1, np.nanstd(np.where(count > 1, mat, 0.0), axis=0, ddof=1), np.nan)
                    ax.fill_between(grid, mean - sd, mean + sd, color=colour[opt], alpha=0.22, linewidth=0, zorder=2)
            ax.set_title(display_name(method), pad=2)
            _finish_axes(ax)
            ax.tick_params(labelbottom=True)
        for k in range(len(methods), nrows * ncols):
            axs[k // ncols][k % ncols].set_visible(False)
        fig.supxlabel("Step", fontsize=7)
        fig.supylabel(f"{label} {direction}".strip(), fontsize=7)
        if title:
            fig.suptitle(title, fontsize=7.5)
        handles = [Line2D([], [], color=colour[o], linewidth=1.2, label=display_name(o)) for o in optimizers]
        note = "mean over seeds ± 1 s.d." + (f" · moving average over {window} steps" if window > 1 else "")
        _legend_top(fig, handles, title=note)
        return fig


# --------------------------------------------------------------------------- (d) MIA ROC


def _roc(entry: Any) -> tuple[list[float], list[float]] | None:
    if isinstance(entry, Mapping) and "fpr" not in entry and isinstance(entry.get("roc"), Mapping):
        entry = entry["roc"]
    if not isinstance(entry, Mapping):
        return None
    fpr, tpr = entry.get("fpr"), entry.get("tpr")
    if not isinstance(fpr, Sequence) or not isinstance(tpr, Sequence) or len(fpr) != len(tpr) or len(fpr) < 2:
        return None
    pts = [(as_number(f), as_number(t)) for f, t in zip(fpr, tpr)]
    if any(f is None or t is None for f, t in pts):
        return None
    pts.sort()
    return [f for f, _ in pts], [t for _, t in pts]


def record_rocs(record: Mapping) -> dict[str, tuple[list[float], list[float]]]:
    """attack → (fpr, tpr) from ``per_item["mia"]``, which may hold them as
    ``{"roc": {attack: {"fpr", "tpr"}}}`` (what the TOFU task writes) or ``{attack: {"fpr", "tpr"}}``
    / ``{attack: {"roc": {...}}}``. Anything else is ignored."""
    per_item = record.get("per_item")
    mia = per_item.get("mia") if isinstance(per_item, Mapping) else None
    if not isinstance(mia, Mapping):
        return {}
    out: dict[str, tuple[list[float], list[float]]] = {}
    nested = mia.get("roc")
    if isinstance(nested, Mapping) and "fpr" not in nested:
        for attack, entry in nested.items():
            if (curve := _roc(entry)) is not None:
                out[str(attack)] = curve
    for attack, entry in mia.items():
        if attack != "roc" and (curve := _roc(entry)) is not None:
            out.setdefault(str(attack), curve)
    return out


def mia_attacks(records: Iterable[Mapping]) -> list[str]:
    """Attacks with ROC points in some record's ``per_item["mia"]`` (name order)."""
    names: set[str] = set()
    for r in records:
        names.update(record_rocs(r))
    return sorted(names)


def _mean_roc(curves: list[tuple[list[float], list[float]]]):
    """Vertical averaging: mean TPR of the curves on a common FPR grid."""
    import numpy as np

    grid = np.linspace(0.0, 1.0, 201)
    tprs = [np.interp(grid, f, t) for f, t in curves]
    return grid, np.mean(tprs, axis=0)


def mia_roc_figure(records: Iterable[Mapping], attack: str, *, log_fpr: bool = False,
                   title: str | None = None) -> "Figure | None":
    """ROC curves of ``attack``: one panel per method, one line per optimizer (mean over seeds),
    target (dashed) / retain (dotted) baselines in black, chance as a grey diagonal. None when
    no record has this attack's ROC."""
    from matplotlib.lines import Line2D

    records = list(records)

    def roc_of(r: Mapping):
        return record_rocs(r).get(attack)

    cells: dict[tuple[str, str], list] = {}
    for r in _ok_unlearned(records):
        if (c := roc_of(r)) is not None:
            cells.setdefault((str(r.get("method")), str(r.get("optimizer"))), []).append(c)
    bases: dict[str, list] = {}
    for r in sorted(records, key=lambda r: baseline_order(record_kind(r))):
        if record_kind(r) != "unlearned" and r.get("status") == "ok" and (c := roc_of(r)) is not None:
            bases.setdefault(record_kind(r), []).append(c)
    if not cells and not bases:
        return None
    methods = sorted({m for m, _ in cells}) or [None]
    optimizers = sorted({o for _, o in cells})
    colour = _optimizer_colours(optimizers)
    ncols = 1 if len(methods) == 1 else 2
    nrows = math.ceil(len(methods) / ncols)

    with _style():
        fig = _new_figure(0.6 + (1.45 if ncols == 2 else 2.6) * nrows)
        axs = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
        for k, method in enumerate(methods):
            ax = axs[k // ncols][k % ncols]
            lo = 1e-3 if log_fpr else 0.0
            ax.plot([lo, 1], [lo, 1], color="0.7", linewidth=0.7, zorder=1)
            for kind, curves in bases.items():
                col, ls = BASELINE_LINES.get(kind, ("0.3", "-."))
                ax.plot(*_mean_roc(curves), color=col, linestyle=ls, linewidth=0.8, zorder=2)
            for opt in optimizers:
                curves = cells.get((method, opt))
                if curves:
                    ax.plot(*_mean_roc(curves), color=colour[opt], linewidth=1.0, zorder=3)
            if log_fpr:
                ax.set_xscale("log")
                ax.set_xlim(lo, 1)
            else:
                ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.0)
            ax.set_aspect("equal" if not log_fpr else "auto", adjustable="box")
            if method is not None:
                ax.set_title(display_name(method), pad=2)
            ax.tick_params(labelbottom=True)
            _finish_axes(ax)
        for k in range(len(methods), nrows * ncols):
            axs[k // ncols][k % ncols].set_visible(False)
        fig.supxlabel("False positive rate", fontsize=7)
        fig.supylabel("True positive rate", fontsize=7)
        handles = [Line2D([], [], color=colour[o], linewidth=1.2, label=display_name(o)) for o in optimizers]
        for kind in bases:
            col, ls = BASELINE_LINES.get(kind, ("0.3", "-."))
            handles.append(Line2D([], [], color=col, linestyle=ls, linewidth=0.8, label=kind))
        handles.append(Line2D([], [], color="0.7", linewidth=0.7, label="chance"))
        name = ATTACK_NAMES.get(attack, attack)
        _legend_top(fig, handles, title=f"MIA attack: {name} · closer to chance = less membership signal",
                    ncol=min(len(handles), 5))
        if title:
            fig.suptitle(title, fontsize=7.5)
        return fig


# --------------------------------------------------------------------------- all


def robustness_columns(metrics: Iterable[Any]) -> list[MetricColumn]:
    """The headline metrics, each followed by its values after the robustness probes
    (``<probe>/<headline metric>`` columns, see ``columns.probe_metric_descriptions``); empty
    when no probe ran."""
    columns = metric_columns(metrics)
    heads = headline_columns(columns)
    probed = {head.name: [c for c in columns if c.name.partition("/")[0] != "harness"
                          and c.name.partition("/")[2] == head.name] for head in heads}
    if not any(probed.values()):
        return []
    # all marked headline, so that metric_columns keeps each metric beside its probed values
    return [dataclasses.replace(column, headline=True) for head in heads for column in [head, *probed[head.name]]]


def write_figures(records: Sequence[Mapping], rows: list[dict], metrics: Sequence[Any], out_dir: str | Path, *,
                  tradeoff: Sequence[str] = DEFAULT_TRADEOFF, spread: str = "ci", level: float = CI_LEVEL,
                  formats: Sequence[str] = FORMATS) -> dict[str, Path]:
    """Every figure into ``out_dir`` (PNG + PDF each), keyed by file name:
    ``tradeoff``, ``bars``, ``robustness`` (when probes ran), ``curves_<quantity>`` per train-log
    quantity, ``mia_roc_<attack>`` per attack found in ``per_item["mia"]`` (none when no record
    has MIA ROC points)."""
    from matplotlib.figure import Figure

    figs: list[tuple[str, Figure]] = [
        ("tradeoff", tradeoff_figure(rows, metrics, tradeoff, spread=spread, pareto=True, level=level)),
        ("bars", bars_figure(rows, metrics, spread=spread, level=level)),
    ]
    robustness = robustness_columns(metrics)
    if robustness:  # each headline metric beside its values after relearning / quantisation
        figs.append(("robustness", bars_figure(rows, robustness, spread=spread, headline_only=False, level=level,
                                               title="after the robustness probes")))
    figs += [(f"curves_{_slug(q)}", curves_figure(records, q)) for q in train_log_quantities(records)]
    for attack in mia_attacks(records):
        fig = mia_roc_figure(records, attack)
        if fig is not None:
            figs.append((f"mia_roc_{_slug(attack)}", fig))
    paths: dict[str, Path] = {}
    for stem, fig in figs:
        paths.update(save_figure(fig, out_dir, stem, formats))
    return paths

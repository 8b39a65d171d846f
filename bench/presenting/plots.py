"""Matplotlib figures of a result set (Agg backend; PNGs beside the report).

Each ``plot_*`` function takes the aggregated cells (:func:`bench.analysing.loading.aggregate`)
of one scenario and returns a Figure; the report saves it and the notebooks
show it.  Failed cells are never drawn as points: they carry NaN metrics and
are dropped, and the scaling plot marks their consumer count with a "failed"
note on the x axis instead, so a collapse that never happened is not drawn.

Error bars are the min..max over repeats around the median.
"""

from __future__ import annotations

import math
import os
import sys

import matplotlib

if "ipykernel" not in sys.modules and "MPLBACKEND" not in os.environ:
    # Headless by default (the report runs on servers and in CI); a notebook
    # keeps its inline backend.
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.analysing.axes import SCALING_AXIS, batch_rank, is_auto, scenario_label, select  # noqa: E402
from bench.analysing.curves import best_batch, curve  # noqa: E402
from bench.analysing.recommend import TURBO, backend_name, is_batched  # noqa: E402
from bench.analysing.usl import MIN_POINTS  # noqa: E402

FIGSIZE = (8.0, 5.0)
#: A USL curve through 2 counts is whatever the optimiser started from (three
#: parameters, two points): not drawn at all.  From 3 counts it is drawn faint.
MIN_DRAWN_POINTS = 3
DPI = 100
_COLORS = {"turbo": "C0", "turbo-many": "C4", "mpq": "C3", "mpq-batch": "C1", "faster-fifo": "C2"}


#: Plot order: turbo, then what it is compared against, then the rest.
_ORDER = {TURBO: 0, "mpq": 1, "mpq-batch": 2}


def default_curves(cells: pd.DataFrame) -> list[tuple[str, object]]:
    """(backend, batch_size) per backend at its best batch size, turbo first."""
    backends = sorted(cells["backend"].unique(), key=lambda b: (_ORDER.get(b, 3), b))
    out = []
    for b in backends:
        bb = best_batch(cells, b)
        if bb is None:  # only failed cells: take any batch so its failures are marked
            bb = cells.loc[cells["backend"] == b, "batch_size"].iloc[0]
        out.append((b, bb))
    return out


def turbo_curves(cells: pd.DataFrame) -> list[tuple[str, object]]:
    return [(TURBO, b) for b in sorted(cells.loc[cells["backend"] == TURBO, "batch_size"].unique(),
                                       key=batch_rank)]


def curve_label(cells: pd.DataFrame, backend: str, batch) -> str:
    name = backend_name(backend)
    return f"{name} b={batch}" if is_batched(cells, backend) else name


def _palette(curves) -> list:
    """A colour per curve, the same backend keeping its colour across plots.

    Only-turbo plots (one line per batch size) use the default cycle; mixed
    plots give each other backend its fixed colour and turbo's batch sizes
    shades of blue, the first turbo curve (its best batch) the standard blue.
    """
    backends = [b for b, _ in curves]
    if set(backends) == {TURBO} and len(backends) > 1:
        return [f"C{i % 10}" for i in range(len(curves))]
    n_turbo = backends.count(TURBO)
    shades = plt.get_cmap("Blues")(np.linspace(0.45, 0.85, max(1, n_turbo - 1)))
    out, k = [], 0
    for i, b in enumerate(backends):
        if b == TURBO:
            out.append(_COLORS[TURBO] if k == 0 else shades[k - 1])
            k += 1
        else:
            out.append(_COLORS.get(b, f"C{4 + i % 6}"))
    return out


def _thousands(ax):
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))


def _ok(c: pd.DataFrame) -> pd.DataFrame:
    return c[~c["failed"] & c["events_per_s"].notna()]


def _errbar(ax, x, med, lo, hi, **kw):
    yerr = np.vstack([np.clip(med - lo, 0, None), np.clip(hi - med, 0, None)])
    return ax.errorbar(x, med, yerr=yerr, capsize=3, marker="o", **kw)


def _errbar_curve(ax, c: pd.DataFrame, col: str, **kw):
    """Median of ``col`` vs consumers with min-max bars, over a whole curve.

    Failed cells are kept as NaN (their metrics are NaN after aggregation, and
    forced so here), which leaves a gap in the line: no point, no zero, and
    no line drawn across the missing count as if it had been measured.
    """
    c = c.sort_values(SCALING_AXIS)
    bad = c["failed"].to_numpy(bool)

    def arr(name):
        a = c[name].to_numpy(float).copy()
        a[bad] = np.nan
        return a

    return _errbar(
        ax, c[SCALING_AXIS].to_numpy(float), arr(col), arr(col + "_min"), arr(col + "_max"), **kw
    )


def _mark_cores(ax, cores, producers=0):
    # Every plot that marks cores has consumer counts on x: whole numbers only.
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if cores:
        # The producers run on the same cores: the line is where consumers
        # plus producers fill the machine.
        # "auto" producers (sized per cell): at least one beside the consumers.
        p = 1 if producers == "auto" else int(producers or 0)
        at = max(1, int(cores) - p)
        label = f"{cores} logical cores" if not p else f"{at} consumers + {p} producer(s) = {cores} cores"
        ax.axvline(at, color="0.4", linestyle=":", linewidth=1.2, label=label)


def _mark_failed(ax, c: pd.DataFrame, color):
    """Note failed cells on the x axis (axes-fraction y), never as data points."""
    for n in c.loc[c["failed"], SCALING_AXIS]:
        ax.annotate(
            "failed",
            xy=(n, 0.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            color=color,
            rotation=90,
        )


def plot_scaling(
    cells: pd.DataFrame,
    scenario: dict,
    cores: int | None = None,
    fits: dict | None = None,
    curves: list[tuple[str, object]] | None = None,
    title: str | None = None,
    model_to: float | None = None,
):
    """Events/s vs consumers with min-max error bars, the ideal line, cores and USL models.

    The USL curve of each line is dashed and runs past the measured range to
    ``model_to`` (default: twice the largest count, or the cores if more);
    the region beyond the measured counts is shaded and labelled as a model.
    """
    sc = select(cells, **scenario)
    curves = curves if curves is not None else default_curves(sc)
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    n_max = float(sc[SCALING_AXIS].max()) if not sc.empty else 1.0
    model_to = model_to or max(2 * n_max, float(cores or 0), n_max + 1)
    # One ideal line, from the base of the curve that reaches the most
    # throughput (the one a user compares against): more would clutter.
    peaks = [_ok(curve(sc, b, bs))["events_per_s"].max() for b, bs in curves]
    ideal_of = int(np.nanargmax(peaks)) if np.isfinite(peaks).any() else -1
    drawn_fits = thin_fits = 0
    for i, ((backend, batch), color) in enumerate(zip(curves, _palette(curves))):
        c = curve(sc, backend, batch)
        ok = _ok(c)
        label = curve_label(sc, backend, batch)
        if ok.empty and not c.empty:
            ax.plot(
                [],
                [],
                color=color,
                marker="x",
                linestyle="none",
                label=f"{label}: every cell failed",
            )
        if not ok.empty:
            _errbar_curve(ax, c, "events_per_s", color=color, label=label)
            if "producer_bound" in ok:
                # The bottleneck on the plot: producer-bound and invalid points
                # are drawn, marked, and never fitted.
                pb = ok[ok["producer_bound"].fillna(False).astype(bool)]
                ex = ok[ok["excluded"].fillna(False).astype(bool) & ~ok.index.isin(pb.index)]
                if not pb.empty:
                    ax.scatter(pb[SCALING_AXIS], pb["events_per_s"], marker="s", s=110,
                               facecolors="none", edgecolors="k", zorder=5,
                               label="producer-bound (not fitted)")
                if not ex.empty:
                    ax.scatter(ex[SCALING_AXIS], ex["events_per_s"], marker="X", s=90,
                               color="k", zorder=5, label="invalid or flagged (not fitted)")
            if i == ideal_of:
                base_n = float(ok.iloc[0][SCALING_AXIS])
                per = float(ok.iloc[0]["events_per_s"]) / base_n
                xs = np.array([1.0, model_to])
                ax.plot(
                    xs,
                    per * xs,
                    color="0.6",
                    linestyle="-.",
                    linewidth=1,
                    label=f"ideal linear ({label})",
                )
        fit = (fits or {}).get((backend, batch))
        if fit is not None and fit.ok and fit.n_points >= MIN_DRAWN_POINTS:
            # A fit from fewer than MIN_POINTS counts is drawn faint: its
            # three parameters are not pinned down by the data.
            thin = fit.n_points < MIN_POINTS
            xs = np.linspace(1.0, model_to, 200)
            ax.plot(
                xs,
                fit.predict_reported(xs),
                color=color,
                linestyle="--",
                linewidth=1,
                alpha=0.35 if thin else 0.8,
            )
            thin_fits += thin
            drawn_fits += 1
        _mark_failed(ax, c, color)
    if drawn_fits:
        label = "USL fit (model)"
        if thin_fits:
            label += f"; faint: < {MIN_POINTS} counts, underdetermined"
        ax.plot([], [], color="0.3", linestyle="--", linewidth=1, label=label)
    if model_to > n_max:
        ax.axvspan(n_max, model_to, color="0.5", alpha=0.08, label="beyond measured: model only")
    _mark_cores(ax, cores, scenario.get("producers", 0))
    ax.set_xlim(0, model_to * 1.02)
    ax.set_ylim(bottom=0)
    _thousands(ax)
    ax.set_xlabel("consumer processes")
    ax.set_ylabel("events/s (median; bars: min-max of repeats)")
    ax.set_title(title or f"Scaling: {scenario_label(scenario)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_efficiency(
    cells: pd.DataFrame,
    scenario: dict,
    threshold: float = 0.8,
    cores: int | None = None,
    curves: list[tuple[str, object]] | None = None,
    fits: dict | None = None,
):
    """Scaling efficiency X(N) / (N x lambda) vs consumers, with the threshold line.

    lambda is the fitted single-process rate where the fit resolves it (see
    :func:`bench.analysing.curves.per_process_rate`); points above 1 are
    ringed: they say the base was too low, not that the queue scaled past ideal.
    """
    sc = select(cells, **scenario)
    curves = (
        curves
        if curves is not None
        else default_curves(sc) + [k for k in turbo_curves(sc) if k not in default_curves(sc)]
    )
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    flagged = False
    for (backend, batch), color in zip(curves, _palette(curves)):
        c = curve(sc, backend, batch, (fits or {}).get((backend, batch)))
        if _ok(c).empty:
            continue
        sup = _ok(c)[_ok(c)["superlinear"].astype(bool)]
        if not sup.empty:
            ax.scatter(sup[SCALING_AXIS], sup["efficiency"], s=150, facecolors="none",
                       edgecolors="red", linewidths=1.5, zorder=5)
            flagged = True
        style = "-" if backend != TURBO or batch == best_batch(sc, TURBO) else ":"
        _errbar_curve(
            ax,
            c,
            "efficiency",
            color=color,
            linestyle=style,
            label=curve_label(sc, backend, batch),
        )
    ax.axhline(
        threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:.0%}"
    )
    ax.axhline(1.0, color="0.6", linewidth=0.8)
    if flagged:
        ax.scatter([], [], s=150, facecolors="none", edgecolors="red", linewidths=1.5,
                   label="above 1: base too low (flagged)")
    _mark_cores(ax, cores, scenario.get("producers", 0))
    ax.set_ylim(0, max(1.2, ax.get_ylim()[1]))
    ax.set_xlabel("consumer processes")
    ax.set_ylabel("scaling efficiency  X(N) / (N x lambda)")
    ax.set_title(f"Scaling efficiency: {scenario_label(scenario)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_saturation(
    cells: pd.DataFrame,
    scenario: dict,
    curves: list[tuple[str, object]] | None = None,
):
    """Machine busy % split into useful work, queue overhead and idle, per backend.

    useful = useful_work_fraction x 100; overhead = busy - useful (>= 0);
    idle = 100 - busy.  One panel per (backend, batch) at its best batch size.
    """
    sc = select(cells, **scenario)
    curves = curves if curves is not None else default_curves(sc)
    k = max(1, len(curves))
    fig, axes = plt.subplots(
        1, k, figsize=(max(4.0, 3.2 * k), 4.2), dpi=DPI, sharey=True, squeeze=False
    )
    for ax, (backend, batch) in zip(axes[0], curves):
        ok = _ok(curve(sc, backend, batch))
        x = np.arange(len(ok))
        useful = ok["useful_pct"].to_numpy(float)
        over = ok["overhead_pct"].to_numpy(float)
        idle = ok["idle_pct"].to_numpy(float)
        pos = np.clip(over, 0, None)
        ax.bar(x, useful, color="tab:green", label="useful work")
        ax.bar(x, pos, bottom=useful, color="tab:red", label="queue overhead")
        ax.bar(x, idle, bottom=useful + pos, color="0.85", label="idle")
        neg = over < 0
        if neg.any():
            # Useful work above the busy %: the work cost less than calibrated.
            # Drawn, hatched, rather than clipped away (the cell is flagged).
            ax.bar(x[neg], over[neg], bottom=useful[neg], color="none", edgecolor="k",
                   hatch="//", label="negative overhead (flagged)")
            ax.set_ylim(0, max(100.0, float(np.nanmax(useful + idle)) * 1.05))
        ax.set_xticks(x, [str(int(n)) for n in ok[SCALING_AXIS]])
        ax.set_xlabel("consumers")
        ax.set_title(curve_label(sc, backend, batch), fontsize=9)
        if not (over < 0).any():
            ax.set_ylim(0, 100)
        if ok.empty:
            ax.text(
                0.5,
                0.5,
                "no ok cell\n(see Failed cells)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
    axes[0][0].set_ylabel("machine CPU %")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0]:
        if ax.get_legend_handles_labels()[0]:
            handles, labels = ax.get_legend_handles_labels()
            break
    # Bars fill the whole height: the legend goes below the panels.
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"CPU saturation: {scenario_label(scenario)}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_batch_tradeoff(
    cells: pd.DataFrame,
    scenario: dict,
    consumers: int,
    latency_budget_ms: float | None = None,
    chosen_batch=None,
):
    """turbo throughput (left) and p99 latency (right, log) vs batch size at ``consumers``."""
    sc = select(cells, **scenario)
    t = sc[(sc["backend"] == TURBO) & (sc[SCALING_AXIS] == consumers)]
    ok = _ok(t)
    # "auto" has no place on a batch-size axis: it is drawn as horizontal lines.
    auto = ok[ok["batch_size"].map(is_auto).astype(bool)]
    ok = ok[~ok["batch_size"].map(is_auto).astype(bool)].sort_values("batch_size")
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    x = ok["batch_size"].to_numpy(float)
    _errbar(
        ax,
        x,
        ok["events_per_s"].to_numpy(float),
        ok["events_per_s_min"].to_numpy(float),
        ok["events_per_s_max"].to_numpy(float),
        color="C0",
        label="events/s",
    )
    ax.set_xscale("log")
    if len(x) and np.nanmin(x) == np.nanmax(x):
        # One batch size: give the log axis a decade around it (identical limits are singular).
        ax.set_xlim(x[0] / 3.0, x[0] * 3.0)
    ax.set_ylim(bottom=0)
    _thousands(ax)
    ax.set_xlabel("batch size (events per batch)")
    ax.set_ylabel("events/s", color="C0")
    ax2 = ax.twinx()
    p99 = ok["latency_p99_ms"].to_numpy(float)
    lines = []
    if np.isfinite(p99).any():
        _errbar(
            ax2,
            x,
            p99,
            ok["latency_p99_ms_min"].to_numpy(float),
            ok["latency_p99_ms_max"].to_numpy(float),
            color="C3",
            linestyle="--",
            label="p99 latency",
        )
        ax2.set_yscale("log")
    if latency_budget_ms:
        lines.append(
            ax2.axhline(
                latency_budget_ms,
                color="C3",
                linestyle=":",
                label=f"budget {latency_budget_ms:g} ms",
            )
        )
    ax2.set_ylabel("p99 latency (ms, log)", color="C3")
    for r in auto.itertuples():
        ax.axhline(r.events_per_s, color="C0", linestyle="-.", alpha=0.7, label="auto events/s")
        if r.latency_p99_ms == r.latency_p99_ms:
            ax2.axhline(r.latency_p99_ms, color="C3", linestyle="-.", alpha=0.7,
                        label="auto p99 latency")
    if chosen_batch is not None and is_auto(chosen_batch):
        ax.plot([], [], color="k", alpha=0.25, linewidth=3, label="recommended: auto")
    elif chosen_batch is not None:
        ax.axvline(
            float(chosen_batch),
            color="k",
            alpha=0.25,
            linewidth=3,
            label=f"recommended b={chosen_batch}",
        )
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    ax.set_title(
        f"Batch-size trade-off at {consumers} consumers: {scenario_label(scenario)}", fontsize=10
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_ctx_switches(
    cells: pd.DataFrame,
    scenario: dict,
    cores: int | None = None,
    curves: list[tuple[str, object]] | None = None,
):
    """Context switches (voluntary + involuntary, all processes) per event vs consumers."""
    sc = select(cells, **scenario)
    curves = curves if curves is not None else default_curves(sc)
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    drawn = False
    for (backend, batch), color in zip(curves, _palette(curves)):
        c = curve(sc, backend, batch)
        if c["ctx_per_event"].notna().sum() == 0:
            continue
        _errbar_curve(
            ax,
            c,
            "ctx_per_event",
            color=color,
            label=curve_label(sc, backend, batch),
        )
        drawn = True
    if drawn and (sc["ctx_per_event"] > 0).any():
        ax.set_yscale("log")
    _mark_cores(ax, cores, scenario.get("producers", 0))
    ax.set_xlabel("consumer processes")
    ax.set_ylabel("context switches per event (log)")
    ax.set_title(f"Contention: {scenario_label(scenario)}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def fmt_float(v, digits=3) -> str:
    """Compact number for tables: NaN -> '-', inf -> 'inf'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}g}"

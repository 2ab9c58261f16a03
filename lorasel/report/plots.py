"""The report's figures (matplotlib, no pyplot state), as SVG ``data:`` URIs.

Figures are embedded through ``<img>``: an SVG loaded as an image never runs script, whatever
text ended up in it. Text from the run (checkpoint labels) never reaches a figure: points are
labelled by epoch number.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

from lorasel.rank.ranking import Ranking
from lorasel.results import BASE


def _svg_uri(fig) -> str:
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "lorasel"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 6.4, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot()


def _x_axis(table: pd.DataFrame) -> tuple[pd.Series, str]:
    """Epoch when every checkpoint has one, else step, else the checkpoint's order."""
    if table["epoch"].notna().all():
        return table["epoch"].astype(float), "epoch"
    if table["step"].notna().all():
        return table["step"].astype(float), "step"
    order = {c: i + 1 for i, c in enumerate(dict.fromkeys(table["checkpoint"]))}
    return table["checkpoint"].map(order).astype(float), "checkpoint #"


def score_and_loss(ranking: Ranking) -> str:
    """Score against epoch, one line per strength, with the training loss on a second axis."""
    table = ranking.table[ranking.table["checkpoint"] != BASE].copy()
    table["x"], xlabel = _x_axis(table)
    fig, ax = _figure()
    for strength, rows in table.groupby("strength"):
        rows = rows.sort_values("x")
        ax.plot(rows["x"], rows["score"], marker="o", markersize=3, label=f"strength {strength:g}")
        ax.fill_between(rows["x"], rows["score_lo"], rows["score_hi"], alpha=0.12)
    best = ranking.best
    best_x = table.loc[(table["checkpoint"] == best.checkpoint) & (table["strength"] == best.strength), "x"]
    ax.scatter(best_x, [best.score], s=160, facecolors="none", edgecolors="crimson", linewidths=2, zorder=5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score (bands: 95% bootstrap interval)")
    handles, labels = ax.get_legend_handles_labels()
    per_ckpt = table.drop_duplicates("checkpoint").sort_values("x")
    if per_ckpt["loss"].notna().any():
        ax2 = ax.twinx()
        (line,) = ax2.plot(
            per_ckpt["x"], per_ckpt["loss"], color="0.35", linestyle="--", label="training loss"
        )
        handles.append(line)
        labels.append("training loss")
        if per_ckpt["val_loss"].notna().any():
            (vline,) = ax2.plot(
                per_ckpt["x"], per_ckpt["val_loss"], color="0.6", linestyle=":", label="validation loss"
            )
            handles.append(vline)
            labels.append("validation loss")
        ax2.set_ylabel("loss")
    ax.legend(handles, labels, fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return _svg_uri(fig)


#: The x axis of :func:`tradeoff` for each metric it may show.
TRADEOFF_AXES = {
    "adherence": "adherence (CLIP text cosine, in-domain prompts)",
    "flexibility": "flexibility (CLIP text cosine, out-of-domain prompts)",
}


def tradeoff_metric(ranking: Ranking) -> str:
    """The metric :func:`tradeoff` sets against fidelity: the first the score weighs besides it
    (adherence by default), else flexibility."""
    return next((m for m in ranking.front if m in TRADEOFF_AXES), "flexibility")


def tradeoff(ranking: Ranking) -> str:
    """Fidelity against :func:`tradeoff_metric`: each checkpoint's strength path, the Pareto
    front (a line when it is on these two metrics alone, else its points), the base, the pick."""
    from matplotlib import colormaps

    x_metric = tradeoff_metric(ranking)
    table = ranking.table
    contest = table[table["checkpoint"] != BASE].copy()
    contest["x"], _ = _x_axis(contest)
    fig, ax = _figure(6.4, 4.4)
    cmap = colormaps["viridis"]
    xs = contest["x"].to_numpy()
    span = (np.nanmin(xs), np.nanmax(xs)) if len(xs) else (0.0, 1.0)
    for _, rows in contest.groupby("checkpoint", sort=False):
        rows = rows.sort_values("strength")
        frac = 0.0 if span[1] == span[0] else (rows["x"].iloc[0] - span[0]) / (span[1] - span[0])
        colour = cmap(0.1 + 0.8 * frac)
        ax.plot(rows[x_metric], rows["fidelity"], color=colour, marker="o", markersize=3, linewidth=1)
        last = rows.iloc[-1]
        ax.annotate(
            f"{last['x']:g}", (last[x_metric], last["fidelity"]), fontsize=7, color=colour,
            textcoords="offset points", xytext=(3, 3),
        )  # fmt: skip
    front = contest[contest["pareto"]].sort_values(x_metric)
    if len(front) and set(ranking.front) == {"fidelity", x_metric}:
        ax.step(front[x_metric], front["fidelity"], where="pre", color="crimson", linewidth=1.2,
                alpha=0.7, label="Pareto front")  # fmt: skip
    elif len(front):
        ax.scatter(front[x_metric], front["fidelity"], s=14, color="crimson", alpha=0.7, zorder=4,
                   label=f"Pareto front ({', '.join(ranking.front)})")  # fmt: skip
    base = table[table["checkpoint"] == BASE]
    if len(base):
        ax.scatter(base[x_metric], base["fidelity"], marker="*", s=120, color="black", label="base model")
    best = ranking.best
    ax.scatter([best.metrics[x_metric]], [best.metrics["fidelity"]], s=160, facecolors="none",
               edgecolors="crimson", linewidths=2, label="pick", zorder=5)  # fmt: skip
    ax.set_xlabel(TRADEOFF_AXES[x_metric])
    ax.set_ylabel("fidelity (CLIP image cosine)")
    ax.set_title("each line: one checkpoint over strengths (number: its epoch)", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return _svg_uri(fig)

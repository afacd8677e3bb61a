"""The plots every stage draws beside its artifacts (training curves, the merge's weight heat map) as
PNG files; matplotlib is imported only when one is drawn. No Dagster here."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_curve(values: list[float] | dict[str, list[float]], xlabel: str, ylabel: str, title: str,
               path: Path) -> Path:
    """Training curves (e.g. validation AUC by evaluation; one line per named series) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = values if isinstance(values, dict) else {"": values}
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, ys in series.items():
        ax.plot(range(1, len(ys) + 1) if isinstance(values, dict) else range(len(ys)), ys, label=name or None)
    if isinstance(values, dict):
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_heatmap(matrix: np.ndarray, rows: list[str], cols: list[str], title: str, label: str, path: Path) -> Path:
    """A matrix (e.g. mixing weight per layer and projection) as a PNG heat map; NaN cells blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # wide enough for the title: two projection columns alone would cut it off
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 + 0.9 * len(cols)), 1.4 + 0.18 * len(rows)))
    im = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=label)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


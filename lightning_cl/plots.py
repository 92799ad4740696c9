"""Matplotlib figures of the notebook's diagnostics, drawn off-screen (Agg).

Each function takes plain arrays and returns a ``Figure``; the callbacks save it as a PNG
beside ``results.json`` and hand it to TensorBoard. ``save_figure`` closes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def close_figure(fig: Figure) -> None:
    plt.close(fig)


def read_png(path: str | os.PathLike) -> np.ndarray:
    """A PNG as an ``H x W x C`` float array in [0, 1]."""
    return plt.imread(path)


def _task_label(task: int, task_names: Sequence[str]) -> str:
    return f"task {task + 1} {task_names[task]}"


def forgetting_curve_figure(
    steps: np.ndarray, task_in_training: np.ndarray, batch_in_task: np.ndarray, accuracy: np.ndarray,
    task_names: Sequence[str], zoom_batches: int = 50,
) -> Figure:
    """Top: test accuracy of each task over the whole run (x: global batch); bottom: the first
    ``zoom_batches`` batches of every task after the first, where the collapse happens.

    ``accuracy[i, j]``: accuracy on task j at record i (NaN where not measured).
    """
    num_tasks = len(task_names)
    later = list(range(1, num_tasks)) if num_tasks > 1 else [0]
    fig = plt.figure(figsize=(max(8, 3 * len(later)), 7), layout="constrained")
    grid = fig.add_gridspec(2, len(later))
    colors = plt.get_cmap("tab10")
    top = fig.add_subplot(grid[0, :])
    for j in range(num_tasks):
        top.plot(steps, accuracy[:, j], color=colors(j), label=_task_label(j, task_names), lw=1.2)
    for t in range(1, num_tasks):
        starts = steps[(task_in_training == t) & (batch_in_task == 0)]
        if len(starts):
            top.axvline(starts[0], color="grey", ls=":", lw=0.8)
    top.set(xlabel="training batch (global step)", ylabel="test accuracy (subsample)", ylim=(-0.02, 1.02),
            title="Forgetting curve: accuracy on each task while training the sequence")
    top.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    for k, t in enumerate(later):
        ax = fig.add_subplot(grid[1, k])
        keep = (task_in_training == t) & (batch_in_task <= zoom_batches)
        for j in range(t + 1):
            ax.plot(batch_in_task[keep], accuracy[keep, j], marker=".", ms=3, color=colors(j), lw=1)
        ax.set(title=f"training {_task_label(t, task_names)}", xlabel="batches into task", ylim=(-0.02, 1.02))
        if k == 0:
            ax.set_ylabel("test accuracy")
    return fig


def weight_updates_figure(
    steps: np.ndarray, task_in_training: np.ndarray, updates: np.ndarray, names: Sequence[str],
    task_names: Sequence[str],
) -> Figure:
    """Relative update ``||W_after - W_before|| / ||W_before||`` per layer and batch (log scale)."""
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.3 * len(names)), sharex=True, layout="constrained",
                             squeeze=False)
    colors = plt.get_cmap("tab10")
    for i, (ax, name) in enumerate(zip(axes[:, 0], names)):
        for t in range(len(task_names)):
            keep = task_in_training == t
            if keep.any():
                ax.plot(steps[keep], updates[keep, i], color=colors(t), lw=0.8,
                        label=_task_label(t, task_names) if i == 0 else None)
        ax.set_yscale("log")
        ax.set_ylabel("rel. update")
        ax.set_title(name, fontsize=9)
    axes[-1, 0].set_xlabel("training batch (global step)")
    fig.suptitle("Relative weight update per batch, ||W_after - W_before|| / ||W_before||")
    fig.legend(loc="outside right center", fontsize=8)
    return fig


def probability_profile_figure(profile: np.ndarray, classes: Sequence[int], title: str) -> Figure:
    """Annotated heatmap: row = true class seen so far, column = output class, value = mean softmax."""
    n_rows, n_cols = profile.shape
    fig, ax = plt.subplots(figsize=(0.55 * n_cols + 2.0, 0.5 * n_rows + 1.6), layout="constrained")
    image = ax.imshow(profile, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(n_rows):
        for j in range(n_cols):
            value = profile[i, j]
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.6 else "white")
    ax.set_xticks(range(n_cols), [str(j) for j in range(n_cols)])
    ax.set_yticks(range(n_rows), [str(c) for c in classes])
    ax.set(xlabel="output class", ylabel="true class", title=title)
    fig.colorbar(image, ax=ax, label="mean softmax probability")
    return fig


def latent_space_figure(points: np.ndarray, labels: np.ndarray, title: str) -> Figure:
    """2-d embedding (t-SNE) coloured by class, with a legend."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5), layout="constrained")
    colors = plt.get_cmap("tab10")
    for c in np.unique(labels):
        keep = labels == c
        ax.scatter(points[keep, 0], points[keep, 1], s=8, color=colors(int(c) % 10), label=str(int(c)), alpha=0.8)
    ax.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2)
    ax.set(title=title, xticks=[], yticks=[])
    return fig


def accuracy_matrix_figure(matrix: np.ndarray, task_names: Sequence[str], title: str) -> Figure:
    """Annotated heatmap: row i = after training task i, column j = test accuracy on task j."""
    n_rows, n_cols = matrix.shape
    fig, ax = plt.subplots(figsize=(1.1 * n_cols + 2.2, 0.8 * n_rows + 1.6), layout="constrained")
    image = ax.imshow(matrix, cmap="magma", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(n_rows):
        for j in range(n_cols):
            ax.text(j, i, f"{matrix[i, j]:.3f}", ha="center", va="center", fontsize=8,
                    color="black" if matrix[i, j] > 0.6 else "white")
    ax.set_xticks(range(n_cols), [f"{j + 1} {task_names[j]}" for j in range(n_cols)], fontsize=8)
    ax.set_yticks(range(n_rows), [f"after {i + 1}" for i in range(n_rows)], fontsize=8)
    ax.set(xlabel="test accuracy on task", ylabel="after training task", title=title)
    fig.colorbar(image, ax=ax, label="accuracy")
    return fig


def acc_curve_figure(curves: Sequence[tuple[str, np.ndarray]], title: str) -> Figure:
    """ACC on the tasks seen so far against the number of tasks trained: one line per label, the
    mean over its runs (rows of the array), with a band of ± one standard deviation."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    colors = plt.get_cmap("tab10")  # distinct hues; past ten lines the line style changes
    for k, (label, runs) in enumerate(curves):
        x = np.arange(1, runs.shape[1] + 1)
        mean = runs.mean(0)
        ax.plot(x, mean, marker="o", ms=3, lw=1.4, color=colors(k % 10), ls=("-", "--", ":")[k // 10 % 3],
                label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            std = runs.std(0, ddof=1)
            ax.fill_between(x, mean - std, mean + std, color=colors(k % 10), alpha=0.2, lw=0)
    ax.set(xlabel="tasks trained", ylabel="ACC on the tasks seen so far", ylim=(-0.02, 1.02), title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return fig

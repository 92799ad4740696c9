"""Latent space: t-SNE of the hidden activations on test images of the seen classes, by class.

The notebook's diagnostics, 4: ``h2`` (84-d) is the latent space; ``h1`` matters for the sparsity
study. After each task, a fixed class-balanced subsample of the seen classes' test images is
embedded with scikit-learn's t-SNE (van der Maaten & Hinton, 2008), drawn coloured by class,
and the raw activations go to TensorBoard's embedding projector with the class labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.diagnostics.diagnostic import Diagnostic, check_positive
from lightning_cl.evaluation import eval_forward
from lightning_cl.task_callback import setting
from lightning_cl.plots import latent_space_figure

LAYERS = ("h1", "h2")


def class_balanced_subsample(y: torch.Tensor, classes: list[int], per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` examples of each class in ``classes`` (all of a class if it has fewer).

    The draw is fixed by ``seed`` and independent of the device and of the other classes, so
    a class is shown by the same images after every task. Grouped by class, in ``classes`` order.
    """
    y_cpu = y.cpu()
    picked = []
    for c in classes:
        idx = torch.nonzero(y_cpu == c).flatten()
        generator = torch.Generator().manual_seed(seed * 1000 + int(c))
        order = torch.randperm(len(idx), generator=generator)[:per_class]
        picked.append(idx[order.sort().values])
    if not picked:
        return torch.empty(0, dtype=torch.long, device=y.device)
    return torch.cat(picked).to(y.device)


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-d t-SNE embedding; the perplexity is lowered for small samples (it must be < n).

    Runs on one thread: inside a training process, scikit-learn's OpenMP threads compete
    with PyTorch's and 500 points took 26-34 s instead of 2 s on a loaded 2-core machine.
    """
    from sklearn.manifold import TSNE  # imported here: only runs that draw t-SNE pay for it
    from threadpoolctl import threadpool_limits

    n = len(features)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    with threadpool_limits(limits=1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


class LatentSpace(Diagnostic):
    """After each task, t-SNE pictures of the hidden layers on seen-class test images.

    Writes ``latent_{layer}_task{t}.png`` and keeps ``embeddings[(t, layer)] = (points, labels)``
    (t from 1); with a TensorBoard logger, also ``add_embedding`` with the class labels.

    Args:
        layers: which hidden activations to embed, from ``"h1"``, ``"h2"``.
        per_class: test images per seen class (t-SNE costs grow ~quadratically: keep n small).
        seed: seed of the subsample and of t-SNE.
        projector: also log the activations to TensorBoard's embedding projector.

    Raises:
        ValueError: if ``layers`` is empty or names an unknown layer, or ``per_class`` < 2.
    """

    def __init__(self, layers: Sequence[str] = ("h2",), per_class: int = 50, seed: int = 0,
                 projector: bool = True) -> None:
        layers = list(layers)
        if not layers or any(layer not in LAYERS for layer in layers):
            raise ValueError(f"{setting(LatentSpace, 'layers')}={layers!r}; use a non-empty list from {', '.join(LAYERS)}.")
        check_positive(setting(LatentSpace, "per_class"), per_class)
        if per_class < 2:
            raise ValueError(f"{setting(LatentSpace, 'per_class')}={per_class} must be at least 2 (t-SNE needs neighbours).")
        self.layers, self.per_class, self.seed, self.projector = layers, per_class, seed, projector
        self.embeddings: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}

    @override
    @torch.no_grad()
    def on_task_end(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        x, y, _ = datamodule.seen_data("test", task)
        idx = class_balanced_subsample(y, datamodule.seen_units(task), self.per_class, self.seed)
        _, hidden = eval_forward(pl_module.network, x[idx])
        labels = y[idx].cpu().numpy()
        writer = self.tensorboard(trainer) if self.projector else None
        for layer in self.layers:
            features = hidden[LAYERS.index(layer)].float().cpu()
            points = tsne_2d(features.numpy(), seed=self.seed)
            self.embeddings[(task + 1, layer)] = (points, labels)
            title = f"t-SNE of {layer} after task {task + 1} {datamodule.task_names()[task]} ({len(labels)} test images)"
            self.publish(trainer, latent_space_figure(points, labels, title), f"latent_{layer}_task{task + 1}")
            if writer is not None:
                writer.add_embedding(features, metadata=[str(int(c)) for c in labels],
                                     tag=f"latent_{layer}_task{task + 1}", global_step=trainer.global_step)

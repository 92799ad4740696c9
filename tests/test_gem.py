"""GEM: the projection against hand-computed and brute-force solutions, the constraint on every
step of a small model (each earlier task's gradient with its own task's units in task-IL), the
memory's budget, resume, and less forgetting than naive fine-tuning on shrunk Split-MNIST."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import REPO
from lightning_cl.classifier import ContinualClassifier
from lightning_cl.maths.gradients import flatten_grads
from lightning_cl.methods import GEM
from lightning_cl.methods.gem import gem_project_
from lightning_cl.task_loop import TaskLoop
from method_runs import TASKS, fit_synthetic
from synthetic import SyntheticTasks


def brute_force_projection(g: np.ndarray, G: np.ndarray) -> np.ndarray:
    """``argmin ||z - g||`` s.t. ``G z >= 0``, by enumerating the active sets: for each set ``S`` of
    rows, the projection of ``g`` onto ``{z: G_S z = 0}``; the closest feasible one is the solution."""
    best = None
    for size in range(len(G) + 1):
        for active in itertools.combinations(range(len(G)), size):
            A = G[list(active)]
            z = g - A.T @ np.linalg.solve(A @ A.T, A @ g) if size else g.copy()
            if (G @ z >= -1e-10).all() and (best is None or np.linalg.norm(z - g) < np.linalg.norm(best - g)):
                best = z
    return best


@pytest.mark.parametrize("margin, eps, expected, v", [
    (0.0, 0.0, [1.0, 0.0], 1.0),  # the projection onto the half-plane z_2 >= 0
    (2.0, 0.0, [1.0, 1.0], 2.0),  # v >= 2 binds: the step moves into the cone
    (0.5, 0.0, [1.0, 0.0], 1.0),  # v* = 1 already exceeds the margin
    (0.0, 0.25, [1.0, -0.2], 0.8),  # (1 + eps) v = 1: the constraint is missed by eps v
])
def test_the_projection_of_a_two_dimensional_gradient_equals_the_hand_computed_one(margin, eps, expected, v):
    # g = (1, -1) against g_1 = (0, 1): the dual is min 1/2 (1 + eps) v^2 - v s.t. v >= margin,
    # and z = g + v g_1.
    g = torch.tensor([1.0, -1.0])
    dots, dual = gem_project_(g, torch.tensor([[0.0, 1.0]]), margin=margin, eps=eps)
    assert dots.tolist() == [-1.0] and dual == pytest.approx([v])
    assert g.tolist() == pytest.approx(expected, abs=1e-6)


def test_the_projection_equals_the_brute_force_one_in_three_dimensions():
    # By hand: g = (1, -1, -1) violates z_2 >= 0 and meets z_1 + z_3 >= 0 with equality; setting
    # z_2 = 0 keeps the second, so the projection is (1, 0, -1). Then 200 random cases, 1-3 rows.
    cases = [(np.array([1.0, -1.0, -1.0]), np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))]
    generator = np.random.default_rng(0)
    while len(cases) < 200:
        G, g = generator.normal(size=(generator.integers(1, 4), 3)), generator.normal(size=3)
        if (G @ g < 0).any():
            cases.append((g, G))
    for g, G in cases:
        z = torch.from_numpy(g.copy())
        gem_project_(z, torch.from_numpy(G), margin=0.0, eps=0.0)
        assert np.allclose(z.numpy(), brute_force_projection(g, G), atol=1e-8), (g, G)
    z = torch.from_numpy(cases[0][0].copy())
    gem_project_(z, torch.from_numpy(cases[0][1]), margin=0.0, eps=0.0)
    assert z.tolist() == pytest.approx([1.0, 0.0, -1.0])


@pytest.mark.parametrize("margin, eps", [(0.0, 0.0), (0.5, 0.0), (0.5, 1e-3), (1.0, 1e-3)])
def test_the_projected_gradient_satisfies_every_constraint(margin, eps):
    generator = torch.Generator().manual_seed(0)
    projected = 0
    for trial in range(200):
        k = 1 + trial % 6
        G = torch.randn(k, 300, generator=generator) * (0.1 + torch.rand(k, 1, generator=generator))
        g = torch.randn(300, generator=generator)
        before = g.clone()
        dots, v = gem_project_(g, G, margin=margin, eps=eps)
        assert np.allclose(dots, (G.double() @ before.double()).numpy())
        if v is None:  # no constraint was violated: g is the unconstrained gradient, bit for bit
            assert (dots >= 0).all() and torch.equal(g, before)
            continue
        projected += 1
        assert (dots < 0).any() and (v >= margin - 1e-9).all()
        after = (G.double() @ g.double()).numpy()
        # <z, g_k> = lambda_k - eps v_k with lambda_k >= 0 (KKT): at least -eps v_k; float32 storage of z
        # costs about 1e-7 relative.
        tolerance = 1e-5 * G.norm(dim=1).double().numpy() * g.norm().item()
        assert (after >= -eps * v - tolerance).all(), (after, v)
    assert 50 < projected < 200  # both branches were tested


def test_the_projection_runs_on_the_device_of_the_gradient():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g, G = torch.tensor([1.0, -1.0], device=device), torch.tensor([[0.0, 1.0]], device=device)
    gem_project_(g, G, margin=0.0, eps=0.0)
    assert g.device.type == device and g.dtype == torch.float32 and g.tolist() == [1.0, 0.0]


def test_linearly_dependent_memory_gradients_without_eps_are_refused_with_the_fix():
    g, G = torch.tensor([1.0, -1.0]), torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="init_args.eps above 0"):
        gem_project_(g, G, margin=0.0, eps=0.0)
    gem_project_(g, G, margin=0.0, eps=1e-3)  # the default regularisation solves it
    assert (G @ g >= -1e-3).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"budget": "ring"}, "GEM init_args.budget='ring'"),
    ({"memories": 0}, "GEM init_args.memories=0"),
    ({"margin": -0.1}, "GEM init_args.margin=-0.1"),
    ({"eps": -1.0}, "GEM init_args.eps=-1.0"),
])
def test_settings_are_validated_and_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GEM(**kwargs)


def test_a_total_budget_below_the_number_of_tasks_is_refused_at_setup(tmp_path):
    with pytest.raises(ValueError, match="memories=2 with budget 'total' keeps no example of each of the 3 tasks"):
        fit_synthetic(tmp_path, [GEM(memories=2, budget="total")])


class ConstraintOfEachStep(Callback):
    """After GEM (later in the callbacks), per step: ``<g, g_k>`` of the gradient the optimiser uses for
    every earlier task ``k``, relative to the norms, with ``g_k`` computed as the authors' code does:
    the network's logits sliced to task ``k``'s units in task-IL (``compute_offsets``), the labels
    shifted into the slice, on all of task ``k``'s memory."""

    def __init__(self, gem):
        self.gem, self.dots = gem, []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if not self.gem.memory:
            return
        params = self.gem._params
        g = flatten_grads(params)
        for k, (x, y, _) in enumerate(self.gem.memory):
            logits = pl_module.network(x)[0]
            if trainer.datamodule.scenario == "task":
                units = torch.tensor(trainer.datamodule.task_units(k))
                logits, y = logits[:, units], (y.unsqueeze(1) == units).int().argmax(1)
            with torch.enable_grad():
                g_k = flatten_grads(params, torch.autograd.grad(F.cross_entropy(logits, y), params, allow_unused=True))
            self.dots.append((k, (g @ g_k / (g.norm() * g_k.norm())).item()))


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_every_step_raises_no_earlier_tasks_memory_loss_to_first_order(tmp_path, scenario):
    gem = GEM(memories=20, margin=0.0, eps=0.0)  # the paper's programme: every constraint holds
    probe = ConstraintOfEachStep(gem)
    trainer, results = fit_synthetic(tmp_path, [gem, probe], scenario=scenario, steps=15, optimizer="sgd", lr=0.1)
    assert results["complete"] and results["method"] == "gem" and results["scenario"] == scenario
    # Task 2's 15 steps against task 1, task 3's against tasks 1 and 2.
    assert [k for k, _ in probe.dots] == [0] * 15 + [0, 1] * 15
    assert min(d for _, d in probe.dots) > -1e-5, probe.dots  # unprojected, some are below -0.01
    assert 0 < trainer.logged_metrics["gem/projected_frac"] <= 1  # task 3 projected some of its steps


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_the_memory_keeps_each_earlier_tasks_examples(tmp_path, scenario):
    gem = GEM(memories=9, budget="total")  # 9 // 3 tasks = 3 examples of each task
    _, results = fit_synthetic(tmp_path, [gem], scenario=scenario)
    assert results["complete"] and len(gem.memory) == 2  # tasks 1 and 2 (none is kept of the last)
    datamodule = SyntheticTasks(tasks=TASKS, batch_size=16, scenario=scenario)
    for task, (x, y, t) in enumerate(gem.memory):
        assert len(y) == 3 and (t == task).all() and set(y.tolist()) <= set(datamodule.task_units(task))
        x_task, y_task, _ = datamodule.task_data("train", task)
        rows = (x.unsqueeze(1) == x_task.unsqueeze(0)).all(2).nonzero()  # each memory example is a training example
        assert rows[:, 0].tolist() == [0, 1, 2] and torch.equal(y_task[rows[:, 1]], y)
    assert GEM(memories=9).per_task(3) == 9 and GEM(memories=9, budget="total").per_task(4) == 2


def fit_two_epochs_per_task(root: Path, callbacks, ckpt_path=None):
    """3 task-IL tasks of 2 epochs of 4 batches (as tests/test_method_resume.py): an epoch checkpoint
    lies inside a task."""
    seed_everything(0, verbose=False)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=-1, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
        limit_train_batches=4, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, callbacks=[TaskLoop(epochs_per_task=2), *callbacks],
    )
    datamodule = SyntheticTasks(scenario="task", batch_size=16, separation=2.0)
    trainer.fit(ContinualClassifier(hidden=[16], num_outputs=datamodule.num_outputs), datamodule, ckpt_path=ckpt_path)
    return json.loads((Path(trainer.log_dir) / "results.json").read_text())


def test_a_run_resumed_mid_task_keeps_the_memory_and_gives_the_uninterrupted_results(tmp_path):
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    straight_gem = GEM(memories=10)
    straight = fit_two_epochs_per_task(tmp_path / "straight", [straight_gem, checkpoints])
    # Epoch 3 is the first of task 2's two epochs: task 1's memory is kept, task 2 half trained.
    ckpt = Path(checkpoints.dirpath) / "epoch=2-step=12.ckpt"
    (state,) = [v for k, v in torch.load(ckpt, weights_only=False)["callbacks"].items() if k.startswith("GEM")]
    ((x, y, t),) = state["memory"]
    assert len(y) == 10 and (t == 0).all() and x.device.type == "cpu"
    resumed_gem = GEM(memories=10)
    resumed = fit_two_epochs_per_task(tmp_path / "resumed", [resumed_gem], ckpt_path=ckpt)
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"] and resumed["seen_loss"] == straight["seen_loss"]
    assert torch.equal(resumed_gem.memory[0][0], x) and torch.equal(resumed_gem.memory[0][1], y)
    for ours, theirs in zip(resumed_gem.memory, straight_gem.memory, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.mnist
def test_gem_forgets_less_than_naive_fine_tuning_on_domain_il_split_mnist(run_cli):
    shrink = ["--data.scenario", "domain", "--data.tasks", "[[0,1],[2,3],[4,5]]", "--task_loop.steps_per_task", "150",
              "--trainer.enable_checkpointing", "false"]
    naive = run_cli("benchmarks/split_mnist.yaml", *shrink)
    gem = run_cli("benchmarks/split_mnist.yaml", "-c", str(REPO / "configs/methods/gem.yaml"), *shrink)
    assert gem["method"] == "gem"
    # Measured (seed 0): naive ACC 0.662, BWT -0.497; GEM ACC 0.978, BWT -0.025.
    assert gem["bwt"] > naive["bwt"] + 0.2 and gem["acc"] > naive["acc"] + 0.15

"""Learning without Forgetting: the distillation loss, which units it compares in each
scenario, the loss weights, the frozen copy in the checkpoint state, and less forgetting
than naive fine-tuning on shrunk Split-MNIST."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from shrunk_mnist import shrunk_run
from synthetic import SyntheticTasks

from lightning_cl.methods import LwF
from lightning_cl.methods.lwf import distillation_loss
from lightning_cl.classifier import ContinualClassifier


def setup(scenario: str, task: int = 1):
    """A module on three synthetic tasks of two classes, LwF's copy taken, in ``task``."""
    torch.manual_seed(0)
    data = SyntheticTasks(scenario=scenario)
    model = ContinualClassifier(hidden=[6], num_outputs=data.num_outputs)
    model.unit_mask = data.unit_mask()
    trainer = SimpleNamespace(datamodule=data)
    lwf = LwF(temperature=2.0)
    lwf.on_task_end(trainer, model, task=0)
    data.current_task = task
    x, y, t = data.task_data("train", task)
    batch = (x[:16], y[:16], t[:16])
    return lwf, trainer, model, batch


def terms(lwf, trainer, model, batch):
    return lwf.loss_terms(trainer, model, batch, model.scenario_forward(batch[0], batch[2]))


def test_temperature_is_validated_and_named():
    with pytest.raises(ValueError, match="LwF init_args.temperature=0"):
        LwF(temperature=0)


def test_distillation_loss_is_zero_against_itself_and_the_scaled_kl_divergence_otherwise():
    torch.manual_seed(0)
    logits, target = torch.randn(5, 3), torch.randn(5, 3)
    assert distillation_loss(logits, logits, 2.0).item() == 0.0
    p = F.softmax(target / 2, dim=1)
    kl = (p * (p.log() - F.log_softmax(logits / 2, dim=1))).sum(1).mean()
    assert distillation_loss(logits, target, 2.0).item() == pytest.approx(4 * kl.item(), rel=1e-5)


@pytest.mark.parametrize("scenario", ["class", "domain", "task"])
def test_no_distillation_while_the_model_equals_its_copy_and_the_current_loss_weighs_one_over_t(scenario):
    lwf, trainer, model, batch = setup(scenario, task=2)
    assert terms(lwf, trainer, model, batch)["distill"].item() == 0.0
    assert lwf.current_loss_weight(trainer, model) == pytest.approx(1 / 3)
    with torch.no_grad():
        model.network.linears[0].weight += 0.05  # the shared layer moves: every output changes
    assert terms(lwf, trainer, model, batch)["distill"].item() > 0


@pytest.mark.parametrize("scenario", ["class", "task", "domain"])
def test_only_the_earlier_tasks_units_are_distilled(scenario):
    lwf, trainer, model, batch = setup(scenario, task=1)
    if scenario != "domain":  # the current task's own units (2 and 3) are free to change
        with torch.no_grad():
            model.network.head.bias[2:4] += 1.0
        assert terms(lwf, trainer, model, batch)["distill"].item() == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():  # unit 0 is task 1's (in domain-IL every task's)
        model.network.head.bias[0] += 1.0
    assert terms(lwf, trainer, model, batch)["distill"].item() > 1e-3


def test_no_distillation_in_the_first_task():
    lwf, trainer, model, batch = setup("class", task=0)
    lwf.old_network = None
    assert terms(lwf, trainer, model, batch) == {} and lwf.current_loss_weight(trainer, model) == 1.0


def test_state_dict_carries_the_frozen_copy():
    lwf, trainer, model, batch = setup("task", task=1)
    with torch.no_grad():
        model.network.linears[0].weight += 0.05
    state = lwf.state_dict()
    assert all(v.device.type == "cpu" for v in state["old_network"].values())
    restored = LwF()
    restored.load_state_dict(state)
    torch.manual_seed(1)
    restored.on_train_start(trainer, ContinualClassifier(hidden=[6], num_outputs=10))  # another model's weights
    assert not restored.old_network.training
    assert not any(p.requires_grad for p in restored.old_network.parameters())
    assert terms(restored, trainer, model, batch)["distill"].item() == terms(lwf, trainer, model, batch)["distill"].item() > 0


@pytest.mark.mnist
def test_lwf_forgets_less_than_naive_fine_tuning_on_shrunk_split_mnist(run_cli):
    naive = shrunk_run(run_cli)
    run = shrunk_run(run_cli, "lwf")
    assert run["method"] == "lwf"
    assert naive["bwt"] < -0.03  # the protocol forgets: otherwise the comparison says nothing
    assert run["bwt"] > naive["bwt"] + 0.03 and run["acc"] > naive["acc"]

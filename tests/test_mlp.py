import pytest
import torch

from lightning_cl.models.mlp import MLP


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_forward_returns_logits_and_both_hidden_layers(norm):
    logits, (h1, h2) = MLP(norm=norm, dropout=0.5)(torch.randn(8, 784))
    assert logits.shape == (8, 10) and h1.shape == (8, 120) and h2.shape == (8, 84)
    assert (h1 >= 0).all() and (h2 >= 0).all()  # after ReLU


def test_norm_layers_sit_before_relu():
    net = MLP(norm="batch")
    assert [type(m).__name__ for m in net.norms] == ["BatchNorm1d", "BatchNorm1d"]
    assert [type(m).__name__ for m in MLP(norm="layer").norms] == ["LayerNorm", "LayerNorm"]
    assert [type(m).__name__ for m in MLP().norms] == ["Identity", "Identity"]


def test_dropout_only_in_train_mode():
    net = MLP(dropout=0.5)
    x = torch.randn(4, 784)
    net.eval()
    assert torch.equal(net(x)[0], net(x)[0])
    net.train()
    torch.manual_seed(0)
    a = net(x)[0]
    assert not torch.equal(a, net(x)[0])


@pytest.mark.parametrize("kwargs, message", [
    ({"norm": "group"}, "norm='group' is not supported"),
    ({"dropout": 1.0}, "dropout=1.0 must be in [0, 1)"),
    ({"dropout": -0.1}, "dropout=-0.1 must be in [0, 1)"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        MLP(**kwargs)

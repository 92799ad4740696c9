import pytest
import torch

from lightning_cl.classifier import ContinualClassifier, l1_activation_penalty


def test_loss_adds_the_weighted_l1_penalty():
    torch.manual_seed(0)
    plain, sparse = ContinualClassifier(), ContinualClassifier(lambda_l1=0.5)
    sparse.load_state_dict(plain.state_dict())
    x, y = torch.randn(16, 784), torch.randint(0, 10, (16,))
    logits, hidden = plain(x)
    expected = plain.loss(logits, hidden, y) + 0.5 * l1_activation_penalty(hidden)
    assert torch.allclose(sparse.loss(logits, hidden, y), expected)


def test_optimiser_is_chosen_in_the_config():
    adam = ContinualClassifier(lr=3e-4).configure_optimizers()
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 3e-4
    sgd = ContinualClassifier(optimizer="sgd", lr=0.01, momentum=0.9).configure_optimizers()
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9


def test_variants_are_configuration():
    assert type(ContinualClassifier(norm="batch").network.norms[0]).__name__ == "BatchNorm1d"
    assert ContinualClassifier(dropout=0.5).network.dropout.p == 0.5


@pytest.mark.parametrize("kwargs, message", [
    ({"lambda_l1": -1.0}, "model.lambda_l1=-1.0 must be >= 0"),
    ({"optimizer": "rmsprop"}, "model.optimizer='rmsprop' is not supported"),
    ({"lr": 0.0}, "model.lr=0.0 must be > 0"),
    ({"norm": "instance"}, "model.norm='instance' is not supported"),
    ({"dropout": 2.0}, "model.dropout=2.0 must be in"),
])
def test_bad_settings_name_the_setting(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        ContinualClassifier(**kwargs)

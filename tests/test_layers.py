"""softops.layers: every public operation as a framework layer (PyTorch modules)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import softops
from softops.layers._spec import LAYERS

torch = pytest.importorskip("torch")
layers = pytest.importorskip("softops.layers.torch")

F64 = torch.float64


def _x():
    return torch.tensor([[0.3, -1.2, 2.0, 0.5], [1.0, 0.1, -0.5, 0.2]], dtype=F64)


# name -> (constructor options, the call's arrays)
CASES = {
    "ArgmaxWeights": ({}, lambda: (_x(),)),
    "SoftArgmax": ({}, lambda: (_x(),)),
    "SoftArgmin": ({"method": "sparsemax"}, lambda: (_x(),)),
    "SoftMax": ({}, lambda: (_x(),)),
    "SoftMin": ({"method": "logsumexp"}, lambda: (_x(),)),
    "SoftIndex": ({"size": 5, "kernel": "gaussian"}, lambda: (torch.tensor([1.5, 3.2], dtype=F64),)),
    "SoftTake": ({}, lambda: (torch.arange(5.0, dtype=F64) ** 2, softops.soft_index(torch.tensor([1.5, 3.2], dtype=F64), 5))),
    "Lookup": ({"mode": "cubic"}, lambda: (torch.arange(5.0, dtype=F64) ** 2, torch.tensor([1.5, 3.2], dtype=F64))),
    "LookupAlongAxis": ({}, lambda: (_x(), torch.tensor([[0.5, 2.5], [1.25, 3.0]], dtype=F64))),
    "Assign": ({"mode": "linear"}, lambda: (torch.zeros(5, dtype=F64), torch.tensor([1.5, 3.0], dtype=F64),
                                            torch.tensor([9.0, 8.0], dtype=F64))),
    "SoftAssign": ({}, lambda: (torch.arange(5.0, dtype=F64), softops.soft_index(torch.tensor(2.5, dtype=F64), 5),
                                torch.tensor(7.0, dtype=F64))),
    "SoftScatterAdd": ({}, lambda: (torch.arange(5.0, dtype=F64), softops.soft_index(torch.tensor(2.5, dtype=F64), 5),
                                    torch.tensor(7.0, dtype=F64))),
    "SoftSort": ({"method": "lapsum"}, lambda: (_x(),)),
    "SoftRank": ({}, lambda: (_x(),)),
    "SoftTopk": ({"k": 2}, lambda: (_x(),)),
    "SoftTopkMask": ({"k": 2, "method": "network"}, lambda: (_x(),)),
    "SoftQuantile": ({"q": 0.3}, lambda: (_x(),)),
    "SoftMedian": ({}, lambda: (_x(),)),
    "SoftPermutation": ({"method": "sinkhorn"}, lambda: (_x(),)),
    "SoftSortBy": ({}, lambda: (_x(), torch.arange(24.0, dtype=F64).reshape(2, 4, 3))),
}
LEARNABLE = [name for name in CASES if LAYERS[name].learnable]


def test_every_public_operation_has_a_layer_and_a_case():
    public = {name for name in softops.__all__ if inspect.isfunction(getattr(softops, name))
              and "num_threads" not in name and "compile_mode" not in name}
    assert {layer.function for layer in LAYERS.values()} == public
    assert set(CASES) == set(LAYERS)
    assert set(layers.__all__) == set(LAYERS)


@pytest.mark.parametrize("name", list(CASES))
def test_layer_is_its_function(name):
    opts, arrays = CASES[name]
    module = getattr(layers, name)(**opts)
    assert isinstance(module, torch.nn.Module) and not list(module.parameters())
    got = module(*arrays())
    want = getattr(softops, LAYERS[name].function)(*arrays(), **opts)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("name", LEARNABLE)
def test_learnt_temperature_is_the_functions_and_gets_its_gradient(name):
    """The layer at ``exp(log_temperature)`` is the function at that
    temperature, and the parameter's gradient is ``T dL/dT`` (the chain rule
    through ``T = exp(log T)``), from the function's own derivative in ``T``."""
    opts, arrays = CASES[name]
    option = LAYERS[name].learnable
    start = 0.7
    module = getattr(layers, name)(**opts, **{option: start}, learn_temperature=True)
    assert [n for n, _ in module.named_parameters()] == ["log_temperature"]
    out = module(*arrays())
    t = module.temperature.detach().to(F64).requires_grad_(True)
    want = getattr(softops, LAYERS[name].function)(*arrays(), **opts, **{option: t})
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    c = torch.linspace(-1.0, 2.0, want.numel(), dtype=F64).reshape(want.shape)
    (out * c).sum().backward()
    (dt,) = torch.autograd.grad((want * c).sum(), t)
    assert module.log_temperature.grad is not None
    torch.testing.assert_close(module.log_temperature.grad.to(F64), (t * dt).detach(), rtol=1e-5, atol=1e-7)
    # A large step keeps the temperature positive and finite.
    with torch.no_grad():
        module.log_temperature -= 50.0
    assert 0 < float(module.temperature.detach()) < start


def test_learnt_temperature_follows_the_inputs_dtype_and_survives_a_state_dict():
    module = layers.SoftRank(temperature=2.0, learn_temperature=True)
    x = _x().to(torch.float32)
    assert module(x).dtype == torch.float32 and module(_x()).dtype == F64
    with torch.no_grad():
        module.log_temperature.fill_(0.25)
    other = layers.SoftRank(temperature=1.0, learn_temperature=True)
    other.load_state_dict(module.state_dict())
    torch.testing.assert_close(other(_x()), module(_x()), rtol=0, atol=0)
    torch.testing.assert_close(other(_x()), softops.soft_rank(_x(), temperature=float(np.exp(np.float32(0.25)))))


def test_per_call_keywords():
    x = _x()
    mask = torch.tensor([[True, True, False, True], [True, True, True, True]])
    torch.testing.assert_close(layers.SoftRank()(x, mask=mask), softops.soft_rank(x, mask=mask), rtol=0, atol=0)
    key = torch.Generator().manual_seed(3)
    got = layers.ArgmaxWeights(method="gumbel")(x, key=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, softops.argmax_weights(x, method="gumbel", key=key), rtol=0, atol=0)


def test_bad_options_raise_clear_errors():
    with pytest.raises(TypeError, match="tempurature"):
        layers.SoftRank(tempurature=1.0)
    with pytest.raises(TypeError, match="pass it to the call"):
        layers.SoftRank(mask=None)
    with pytest.raises(TypeError, match=r"needs the option\(s\) \['k'\]"):
        layers.SoftTopkMask()
    with pytest.raises(ValueError, match="no temperature to learn"):
        layers.Lookup(learn_temperature=True)
    with pytest.raises(ValueError, match="positive finite number"):
        layers.SoftRank(temperature=softops.Relative(1.0), learn_temperature=True)
    with pytest.raises(ValueError, match="positive finite number"):
        layers.SoftRank(temperature=0.0, learn_temperature=True)
    with pytest.raises(TypeError, match="takes the arrays"):
        layers.Lookup()(_x())
    with pytest.raises(TypeError, match="unexpected keyword"):
        layers.SoftMax()(_x(), mask=None)


def test_layers_train_in_a_model():
    """A model of ``Linear -> SoftTopkMask`` trained by SGD: the loss falls and
    the learnt temperature moves."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 6, dtype=F64),
                                layers.SoftTopkMask(k=2, temperature=1.0, learn_temperature=True))
    x = torch.randn(32, 6, dtype=F64)
    target = torch.zeros(32, 6, dtype=F64)
    target[:, :2] = 1.0
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = ((model(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert float(model[1].temperature.detach()) != pytest.approx(1.0)

"""Gaussian, alpha and DropConnect dropout against their definitions, plus the kind registry and factory."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dropbench.dropout import (
    DROPOUT_KINDS,
    AlphaDropout,
    DropConnectLinear,
    Dropout,
    GaussianDropout,
    SpatialDropout,
    alpha_dropout_affine,
    effective_keep_rate,
    keep_mask,
    make_dropout,
)

N = 1_000_000
LAMBDA = 1.0507009873554805
ALPHA = 1.6732632423543772
ALPHA_PRIME = -LAMBDA * ALPHA


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_identity_drawing_nothing(layer, x):
    """`layer(x)` returns x unchanged and leaves its generator's state untouched."""
    g = gen(7)
    layer.set_generator(g)
    state = g.get_state()
    assert torch.equal(layer(x), x)
    assert torch.equal(g.get_state(), state)


# --- Gaussian -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_gaussian_noise_has_mean_one_and_variance_one_minus_p_over_p(keep):
    layer = GaussianDropout(keep).train()
    layer.set_generator(gen(1))
    c = 2.5
    y = layer(torch.full((1000, 1000), c)).double()
    variance = (1 - keep) / keep
    # E[y] = c: within 4 standard errors of the sample mean.
    assert abs(y.mean().item() - c) < 4 * c * math.sqrt(variance / N)
    # Var[y / c] = (1 - p) / p, per unit (a noise shared by a row or the whole tensor would have ~0 variance here).
    assert y.div(c).var().item() == pytest.approx(variance, rel=0.03)


@pytest.mark.parametrize("mode", ["eval", "keep=1"])
def test_gaussian_eval_and_keep_one_are_the_identity(mode):
    layer = GaussianDropout(0.5).eval() if mode == "eval" else GaussianDropout(1.0).train()
    assert_identity_drawing_nothing(layer, torch.randn(64, 32))


def test_gaussian_is_reproducible_from_the_generator_seed():
    x = torch.randn(64, 32)
    outputs = []
    for seed in (3, 3, 4):
        layer = GaussianDropout(0.5).train()
        layer.set_generator(gen(seed))
        outputs.append(layer(x))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])


def test_gaussian_draws_from_its_generator_not_the_global_rng():
    layer = GaussianDropout(0.5).train()
    layer.set_generator(gen(5))
    global_state = torch.get_rng_state()
    layer(torch.randn(8, 8, generator=gen(0)))
    assert torch.equal(torch.get_rng_state(), global_state)


# --- Alpha ----------------------------------------------------------------------------------------------------------


def affine_from_the_definition(keep):
    q = 1 - effective_keep_rate(keep)
    a = ((1 - q) * (1 + q * ALPHA_PRIME**2)) ** -0.5
    return a, -a * ALPHA_PRIME * q


@pytest.fixture(scope="module")
def selu_input():
    z = torch.randn(N, generator=gen(11))
    return F.selu(z)


def test_selu_of_a_standard_normal_has_mean_zero_and_variance_one(selu_input):
    # Sanity check of the input the alpha tests rely on: SELU's fixed point.
    assert abs(selu_input.double().mean().item()) < 0.01
    assert abs(selu_input.double().var().item() - 1) < 0.02


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.95])
def test_alpha_dropout_keeps_mean_zero_and_variance_one(selu_input, keep):
    layer = AlphaDropout(keep).train()
    layer.set_generator(gen(12))
    y = layer(selu_input).double()
    assert abs(y.mean().item()) < 0.01
    assert abs(y.var().item() - 1) < 0.02


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.95])
def test_alpha_dropout_sets_a_fraction_one_minus_p_to_a_alpha_prime_plus_b(selu_input, keep):
    a, b = affine_from_the_definition(keep)
    assert alpha_dropout_affine(keep) == pytest.approx((a, b), rel=1e-12)
    layer = AlphaDropout(keep).train()
    layer.set_generator(gen(13))
    y = layer(selu_input)
    dropped = torch.isclose(y, torch.tensor(a * ALPHA_PRIME + b), rtol=0, atol=1e-6)
    # Kept units are SELU outputs > alpha' (min z is -4.8 here, so > alpha' + 0.014): none lands on the constant.
    fraction = dropped.double().mean().item()
    assert abs(fraction - (1 - keep)) < 4 * math.sqrt(keep * (1 - keep) / N)
    # Kept units go through the same affine map.
    torch.testing.assert_close(y[~dropped], a * selu_input[~dropped] + b)


def test_alpha_dropout_uses_the_same_bits_as_keep_mask():
    x = torch.randn(300, 70, generator=gen(99)).abs()  # positive: no input can sit on the dropped value α' < 0
    layer = AlphaDropout(0.7).train()
    layer.set_generator(gen(14))
    a, b = alpha_dropout_affine(0.7)
    dropped = torch.isclose(layer(x), torch.tensor(a * ALPHA_PRIME + b), rtol=0, atol=1e-6)
    assert torch.equal(~dropped, keep_mask(x.shape, 0.7, gen(14)) != 0)


@pytest.mark.parametrize("mode", ["eval", "keep=1"])
def test_alpha_eval_and_keep_one_are_the_identity(mode):
    layer = AlphaDropout(0.5).eval() if mode == "eval" else AlphaDropout(1.0).train()
    assert_identity_drawing_nothing(layer, torch.randn(64, 32))


# --- DropConnect ----------------------------------------------------------------------------------------------------


def dropconnect(in_features, out_features, keep, seed=0, bias=0.0):
    torch.manual_seed(seed)  # the weight init only; masks come from the layer's generator
    layer = DropConnectLinear(in_features, out_features, keep).train()
    with torch.no_grad():
        layer.bias.fill_(bias)
    return layer


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_dropconnect_masks_weights_at_the_keep_rate_and_scales_kept_ones_by_one_over_p(keep):
    n = 512
    layer = dropconnect(n, n, keep)
    w = layer.weight.detach()
    assert (w != 0).all()
    g = gen(21)
    layer.set_generator(g)
    state = g.get_state()
    # With x = I and a zero bias, row i of the output is column i of the masked, scaled weight matrix.
    masked = layer(torch.eye(n)).detach().T
    dropped = masked == 0
    fraction = dropped.double().mean().item()
    assert abs(fraction - (1 - keep)) < 4 * math.sqrt(keep * (1 - keep) / n**2)
    p_eff = effective_keep_rate(keep)
    torch.testing.assert_close(masked[~dropped].double(), w[~dropped].double() / p_eff, rtol=1e-6, atol=0)
    # The mask is keep_mask's, drawn from the layer's generator.
    g.set_state(state)
    assert torch.equal(dropped, keep_mask(w.shape, keep, g) == 0)


def test_dropconnect_never_masks_the_bias():
    layer = dropconnect(64, 32, 0.5, bias=0.0)
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-1, 1, 32))
    layer.set_generator(gen(22))
    for _ in range(20):
        assert torch.equal(layer(torch.zeros(4, 64)), layer.bias.detach().expand(4, 32))


def test_dropconnect_shares_one_mask_across_the_batch_and_draws_a_new_one_per_call():
    layer = dropconnect(64, 32, 0.5)
    layer.set_generator(gen(23))
    x = torch.randn(1, 64).expand(5, 64)
    first = layer(x)
    assert all(torch.equal(first[0], row) for row in first)
    assert not torch.equal(first, layer(x))


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_dropconnect_expectation_is_the_plain_linear_output(keep):
    layer = dropconnect(16, 8, keep, bias=0.3)
    layer.set_generator(gen(24))
    x = torch.randn(4, 16, generator=gen(25))
    passes = 2000
    with torch.no_grad():
        mean = sum(layer(x).double() for _ in range(passes)) / passes
        w = layer.weight.double()
        expected = F.linear(x.double(), w, layer.bias.double())
    # Var of one pass: (1 - p)/p * sum_k x_k^2 W_jk^2 (independent weights); 5 standard errors of the mean.
    p_eff = effective_keep_rate(keep)
    variance = (1 - p_eff) / p_eff * (x.double() ** 2) @ (w**2).T
    assert ((mean - expected).abs() < 5 * (variance / passes).sqrt()).all()


@pytest.mark.parametrize("mode", ["eval", "keep=1"])
def test_dropconnect_eval_and_keep_one_are_a_plain_linear(mode):
    layer = dropconnect(16, 8, 0.5, bias=0.1) if mode == "eval" else dropconnect(16, 8, 1.0, bias=0.1)
    if mode == "eval":
        layer.eval()
    g = gen(26)
    layer.set_generator(g)
    state = g.get_state()
    x = torch.randn(4, 16)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert torch.equal(g.get_state(), state)


def test_dropconnect_gradient_is_zero_exactly_where_the_weight_was_dropped():
    layer = dropconnect(32, 16, 0.5, bias=0.1)
    g = gen(27)
    layer.set_generator(g)
    state = g.get_state()
    x = torch.randn(8, 32, generator=gen(28))
    upstream = torch.randn(8, 16, generator=gen(29))
    (layer(x) * upstream).sum().backward()
    g.set_state(state)
    mask = keep_mask(layer.weight.shape, 0.5, g)
    grad = layer.weight.grad
    assert (grad[mask == 0] == 0).all()
    assert (grad[mask != 0] != 0).all()
    torch.testing.assert_close(grad, (upstream.T @ x) * mask)
    torch.testing.assert_close(layer.bias.grad, upstream.sum(0))


def test_dropconnect_is_a_linear_layer_and_validates_its_keep_rate():
    layer = DropConnectLinear(4, 3, 0.5)
    assert isinstance(layer, nn.Linear) and layer.keep == 0.5
    assert "keep=0.5" in repr(layer)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError):
            DropConnectLinear(4, 3, bad)
    with pytest.raises(RuntimeError):
        layer.train()(torch.randn(2, 4))  # no generator set


# --- Registry and factory -------------------------------------------------------------------------------------------


def test_dropout_kinds_has_the_five_names_with_one_line_descriptions():
    assert set(DROPOUT_KINDS) == {"bernoulli", "gaussian", "dropconnect", "alpha", "spatial"}
    assert all(kind.summary and "\n" not in kind.summary + kind.brief for kind in DROPOUT_KINDS.values())


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("bernoulli", Dropout), ("gaussian", GaussianDropout), ("alpha", AlphaDropout), ("spatial", SpatialDropout)],
)
def test_make_dropout_builds_each_activation_kind(kind, cls):
    layer = make_dropout(kind, 0.7)
    assert type(layer) is cls and layer.keep == 0.7


def test_make_dropout_refuses_dropconnect_and_unknown_kinds():
    with pytest.raises(ValueError, match="DropConnectLinear"):
        make_dropout("dropconnect", 0.5)
    with pytest.raises(ValueError) as error:
        make_dropout("gausian", 0.5)
    assert all(name in str(error.value) for name in DROPOUT_KINDS)


@pytest.mark.parametrize("kind", ["gaussian", "alpha"])
def test_new_kinds_refuse_bad_keep_rates_and_training_without_a_generator(kind):
    with pytest.raises(ValueError):
        make_dropout(kind, 0.0)
    with pytest.raises(RuntimeError):
        make_dropout(kind, 0.5).train()(torch.randn(2, 3))

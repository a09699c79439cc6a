"""Dropout against its definition: y = x * m / p, m ~ Bernoulli(p) per unit; identity in eval and at p = 1."""

import math

import pytest
import torch

from dropbench.dropout import (
    LANE_WIDTHS,
    AlphaDropout,
    DropConnectLinear,
    Dropout,
    SpatialDropout,
    effective_keep_rate,
    keep_mask,
    kept_units,
    lane_bits,
    lane_threshold,
    random_words,
)
from dropbench.models import MLP, init_parameters_

N = 1_000_000
TOP = 65535 / 65536  # the largest keep rate below 1 that 16-bit lanes realise
NEAR_ONE = 0.999995  # in (1 - 2**-17, 1): rounds to 1, where its threshold once overflowed and kept 7 units in 8


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("keep", [0.1, 0.25, 0.5, 0.75, 0.8, 0.9375, 3 / 256, 0.95])
def test_units_are_kept_at_the_keep_rate(keep):
    mask = keep_mask((1000, 1000), keep, gen())
    kept = (mask != 0).double().mean().item()
    standard_error = math.sqrt(keep * (1 - keep) / N)
    assert abs(kept - keep) < 4 * standard_error


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.8])
def test_kept_units_are_scaled_by_one_over_p_and_the_mean_is_preserved(keep):
    layer = Dropout(keep).train()
    layer.set_generator(gen(1))
    x = torch.full((1000, 1000), 3.0)
    y = layer(x)
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 3.0 / effective_keep_rate(keep)))
    # E[y] = x: the sample mean of x * m / p is within 4 standard errors of x.
    standard_error = 3.0 * math.sqrt((1 - keep) / keep / N)
    assert abs(y.double().mean().item() - 3.0) < 4 * standard_error


def test_eval_mode_is_the_identity_and_draws_nothing():
    layer = Dropout(0.5).eval()
    g = gen(2)
    layer.set_generator(g)
    state = g.get_state()
    x = torch.randn(64, 32)
    assert layer(x) is x
    assert torch.equal(g.get_state(), state)


def test_keep_one_is_the_identity_in_training_and_draws_nothing():
    layer = Dropout(1.0).train()
    g = gen(3)
    layer.set_generator(g)
    state = g.get_state()
    x = torch.randn(64, 32)
    assert torch.equal(layer(x), x)
    assert torch.equal(g.get_state(), state)


def test_training_without_a_generator_is_refused():
    with pytest.raises(RuntimeError):
        Dropout(0.5).train()(torch.ones(2, 2))


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.5])
def test_keep_rates_outside_0_1_are_refused(keep):
    with pytest.raises(ValueError):
        Dropout(keep)


def test_every_lane_of_the_random_bits_is_uniform():
    # torch's default int64 random_() never sets the top bit; a mask built on it would keep every
    # fourth unit with probability 1 at keep 0.5. Each 16-bit lane must be negative half the time.
    lanes = random_words(4 * 250_000, 16, gen(4), "cpu").view(torch.int16).view(-1, 4)
    negative = (lanes < 0).double().mean(dim=0)
    assert torch.all((negative - 0.5).abs() < 4 * math.sqrt(0.25 / 250_000))


def test_mask_entries_are_independent_of_their_neighbours():
    mask = (keep_mask((N,), 0.5, gen(5)) != 0).double()
    correlation = torch.corrcoef(torch.stack([mask[:-1], mask[1:]]))[0, 1].item()
    assert abs(correlation) < 4 / math.sqrt(N)


def test_effective_keep_rate_is_within_one_part_in_65536():
    for keep in (0.1, 0.3, 0.5, 0.8, 0.999):
        assert abs(effective_keep_rate(keep) - keep) <= 0.5 / 65536
    assert effective_keep_rate(0.5) == 0.5


def test_masks_are_reproducible_from_the_generator_seed():
    a = keep_mask((256, 128), 0.5, gen(7))
    b = keep_mask((256, 128), 0.5, gen(7))
    c = keep_mask((256, 128), 0.5, gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_mlp_drops_inputs_and_hidden_units_at_their_own_rates():
    model = MLP(100, (200,), 3, (0.5,), 0.8)
    init_parameters_(model, gen(9))
    model.set_generator(gen(10))
    seen = {}
    model.input_dropout.register_forward_hook(lambda m, i, o: seen.__setitem__("input", o))
    # The hidden layer's output is rewritten in place by the fused ReLU + dropout: keep a copy.
    model.hidden[0].register_forward_hook(lambda m, i, o: seen.__setitem__("z", o.detach().clone()))
    model.output.register_forward_hook(lambda m, i, o: seen.__setitem__("hidden", i[0]))
    model.train()(torch.ones(500, 100))
    assert abs((seen["input"] != 0).double().mean().item() - 0.8) < 0.01
    active = seen["z"] > 0
    assert abs((seen["hidden"][active] != 0).double().mean().item() - 0.5) < 0.01
    assert torch.all(seen["hidden"][~active] == 0)
    model.eval()
    x = torch.randn(5, 100)
    assert torch.equal(model(x), model(x))  # eval mode: deterministic


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_fused_relu_dropout_equals_relu_then_dropout_in_values_and_gradients(keep):
    """The fused layer computes its backward from its output alone; it must match autograd through the
    plain ReLU and dropout exactly: same units, same values, same gradient for the weights below it."""
    x = torch.randn(64, 32, generator=gen(20))
    upstream = torch.randn(64, 48, generator=gen(21))
    grads, outputs = [], []
    for fused in (True, False):
        w = torch.randn(32, 48, generator=gen(22)).requires_grad_()
        layer = Dropout(keep).train()
        layer.set_generator(gen(23))
        z = x @ w
        y = layer.relu_then_drop_(z) if fused else layer(torch.relu(z))
        (y * upstream).sum().backward()
        outputs.append(y.detach())
        grads.append(w.grad)
    assert torch.equal(outputs[0], outputs[1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-6)
    assert (outputs[0] == 0).double().mean().item() > 0.4  # ReLU and dropout both zeroed units here


def test_fused_relu_dropout_is_a_plain_relu_in_eval_mode_and_at_keep_one():
    z = torch.randn(64, 32, generator=gen(24))
    for layer in (Dropout(0.5).eval(), Dropout(1.0).train()):
        g = gen(25)
        layer.set_generator(g)
        state = g.get_state()
        assert torch.equal(layer.relu_then_drop_(z.clone()), torch.relu(z))
        assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize(
    ("keep", "bits"),
    [(0.5, 1), (0.25, 2), (0.75, 2), (0.0625, 4), (0.9375, 4), (3 / 256, 8), (255 / 256, 8), (0.8, 16), (0.1, 16)],
)
def test_a_lane_is_as_narrow_as_the_effective_keep_rate_allows(keep, bits):
    assert lane_bits(keep) == bits
    assert lane_bits(keep) in LANE_WIDTHS


@pytest.mark.parametrize("keep", [0.5, 0.25, 0.75, 0.0625, 0.9375, 3 / 256, 255 / 256, 0.8, 0.1, 0.999, 1 / 65536])
def test_the_threshold_keeps_exactly_the_effective_rate_of_all_lane_values(keep):
    """Counted over every value a lane can take, not sampled: narrow lanes change the draws, not the rate."""
    bits, threshold = lane_bits(keep), lane_threshold(keep)
    values = torch.arange(-(2**15), 2**15) if bits == 16 else torch.arange(2**bits)
    kept = int((values < threshold).sum())
    assert kept / len(values) == effective_keep_rate(keep)


@pytest.mark.parametrize("keep", [0.5, 0.25, 0.0625])
def test_every_lane_position_of_a_narrow_mask_is_kept_at_the_rate_and_independent(keep):
    """Narrow lanes share bytes: unit i is lane i // B of byte i % B. Each of a byte's lanes must be kept at
    the rate, and the lanes of one byte must not move together."""
    per_byte = 8 // lane_bits(keep)
    rows = N // per_byte
    kept = kept_units((per_byte, rows), keep, gen(11), "cpu").double()  # row j: lane j of every byte
    standard_error = math.sqrt(keep * (1 - keep) / rows)
    assert torch.all((kept.mean(dim=1) - keep).abs() < 4 * standard_error)
    correlations = torch.corrcoef(kept)[~torch.eye(per_byte, dtype=torch.bool)]
    assert torch.all(correlations.abs() < 4 / math.sqrt(rows))


def test_kept_units_as_booleans_and_keep_mask_mark_the_same_units():
    for keep in (0.5, 0.75, 0.8):
        assert torch.equal(
            kept_units((300, 70), keep, gen(12), "cpu", torch.bool), keep_mask((300, 70), keep, gen(12)) != 0
        )


def realised(keep):
    """The rate a mask must keep at: the nearest multiple of 1/65536 (computed here, not by dropbench)."""
    return round(keep * 65536) / 65536


@pytest.mark.parametrize("fused", [False, True], ids=["dropout", "relu-then-dropout"])
@pytest.mark.parametrize("keep", [NEAR_ONE, TOP])
def test_rates_near_one_keep_and_preserve_the_mean_at_the_rate_the_lanes_realise(keep, fused):
    p, n = realised(keep), 4 * N
    layer = Dropout(keep).train()
    layer.set_generator(gen(30))
    x = torch.full((2000, 2000), 3.0)
    y = layer.relu_then_drop_(x.clone()) if fused else layer(x)
    kept = (y != 0).double().mean().item()
    assert abs(kept - p) <= 4 * math.sqrt(p * (1 - p) / n)  # exactly 1 where p is 1
    assert abs(y.double().mean().item() - 3.0) <= 4 * 3.0 * math.sqrt((1 - p) / p / n)
    if p < 1:  # some units dropped, the kept ones scaled by 1/p
        assert kept < 1
        assert torch.all(y[y != 0] == 3.0 / p)


def test_a_rate_that_rounds_to_one_is_keep_one_exactly_and_draws_nothing():
    """Every masked kind, and the masks themselves: the identity in training, the generator untouched."""
    assert realised(NEAR_ONE) == 1.0
    x = torch.rand(64, 8, 4, 4) + 0.5
    flat = x.flatten(1)
    g = gen(31)
    state = g.get_state()
    for layer in (Dropout(NEAR_ONE), SpatialDropout(NEAR_ONE), AlphaDropout(NEAR_ONE)):
        layer.train().set_generator(g)
        assert torch.equal(layer(x), x), type(layer).__name__
    dropout = Dropout(NEAR_ONE).train()
    dropout.set_generator(g)
    assert torch.equal(dropout.relu_then_drop_(flat.clone()), flat)
    linear = DropConnectLinear(128, 16, NEAR_ONE).train()
    linear.set_generator(g)
    assert torch.equal(linear(flat), torch.nn.functional.linear(flat, linear.weight, linear.bias))
    assert torch.equal(keep_mask((300, 70), NEAR_ONE, g), torch.ones(300, 70))
    assert torch.equal(kept_units((300, 70), NEAR_ONE, g, "cpu"), torch.ones(300, 70, dtype=torch.uint8))
    assert torch.equal(g.get_state(), state)


def test_lanes_are_refused_for_a_rate_that_rounds_to_one():
    """No threshold of a lane keeps all its values in the type it is compared as: such a rate draws nothing."""
    for helper in (lane_bits, lane_threshold):
        with pytest.raises(ValueError, match="rounds to 1"):
            helper(NEAR_ONE)


@pytest.mark.parametrize("make", [Dropout, SpatialDropout, AlphaDropout, lambda p: DropConnectLinear(4, 4, p)])
def test_rates_below_the_smallest_the_lanes_realise_are_refused(make):
    with pytest.raises(ValueError, match=r"keep rate 1e-09 is below 1/65536 ≈ 1\.5e-05"):
        make(1e-9)
    assert make(1 / 65536).keep == 1 / 65536  # the smallest realisable rate itself is allowed

import pytest
import torch

from dropbench.errors import UserError
from dropbench.models import MLP, init_parameters_
from dropbench.regularizers import REGULARIZERS, add_penalty_gradients_, apply_max_norm_, parse_regularizer


def model_and_batch(seed=0):
    model = MLP(8, (16, 16), 3, (1.0, 1.0), 1.0)
    init_parameters_(model, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    return model, torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)


def test_our_l2_step_equals_torch_weight_decay_on_weights_only():
    lam = 0.05
    ours, x, y = model_and_batch()
    theirs, _, _ = model_and_batch()
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    weights = [p for n, p in theirs.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in theirs.named_parameters() if n.endswith("bias")]
    opt_theirs = torch.optim.SGD(
        [{"params": weights, "weight_decay": lam}, {"params": biases, "weight_decay": 0.0}], lr=0.1, momentum=0.9
    )
    setting = parse_regularizer("l2", {"l2": lam})
    for _ in range(5):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if model is ours:
                add_penalty_gradients_(model.penalized_weights(), setting)
            opt.step()
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_penalty_gradients_equal_autograd_of_the_penalty_and_spare_biases():
    l1, l2 = 0.01, 0.1
    model, _, _ = model_and_batch()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    add_penalty_gradients_(model.penalized_weights(), parse_regularizer("l1+l2", {"l1": l1, "l2": l2}))
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p.grad) == 0, name
            continue
        w = p.detach().clone().requires_grad_(True)
        (l1 * w.abs().sum() + l2 / 2 * (w**2).sum()).backward()
        torch.testing.assert_close(p.grad, w.grad)


def test_max_norm_bounds_every_unit_and_leaves_small_rows_alone():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(50, 20, generator=g) * torch.linspace(0.05, 2.0, 50).unsqueeze(1)
    before = w.clone()
    apply_max_norm_([w], 3.0)
    norms = w.norm(dim=1)
    assert torch.all(norms <= 3.0 + 1e-5)
    small = before.norm(dim=1) <= 3.0
    assert small.any() and (~small).any()
    assert torch.equal(w[small], before[small])
    torch.testing.assert_close(norms[~small], torch.full_like(norms[~small], 3.0))


def test_combinations_are_canonical_and_carry_their_strengths():
    setting = parse_regularizer("early-stopping+l2+l1", {"l2": 1e-3})
    assert setting.name == "l1+l2+early-stopping"
    assert setting.strength_label == "1e-05+0.001+10"
    assert setting.l2 == 1e-3 and setting.l1 == 1e-5 and setting.patience == 10 and setting.max_norm is None
    assert parse_regularizer("none").strength_label == ""


@pytest.mark.parametrize("spec", ["l3", "l2+l2", "none+l2", "max_norm", ""])
def test_bad_regularizer_names_are_refused(spec):
    with pytest.raises(UserError):
        parse_regularizer(spec)


def test_every_regularizer_has_a_documented_default():
    for info in REGULARIZERS.values():
        assert info.summary
        if info.name != "none":
            assert info.default_strength and info.strength_meaning

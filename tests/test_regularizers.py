import math

import pytest
import torch

from dropbench.errors import UserError
from dropbench.models import MLP, init_parameters_
from dropbench.regularizers import (
    REGULARIZERS,
    EarlyStopping,
    add_penalty_gradients_,
    apply_max_norm_,
    apply_weight_decay_,
    decay_factor,
    parse_regularizer,
)


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
    for _ in range(5):
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if model is ours:
                add_penalty_gradients_(model.penalized_weights(), l2=lam)
            opt.step()
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_penalty_gradients_equal_autograd_of_the_penalty_and_spare_biases():
    l1, l2 = 0.01, 0.1
    model, _, _ = model_and_batch()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    add_penalty_gradients_(model.penalized_weights(), l1=l1, l2=l2)
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


def stack_of(weights):
    """K weights [out, in] as a stack's [K, in, out] (what `stacked.StackedMLP` holds)."""
    return torch.stack([w.t() for w in weights]).contiguous()


def test_per_member_penalty_gradients_equal_autograd_of_each_members_own_penalty():
    """A stack's strengths [K, 1, 1], 0 where a member has no penalty: each member's gradient gains exactly
    the gradient of its own λ₁·Σ|w| + (λ₂/2)·Σw², computed here by autograd."""
    g = torch.Generator().manual_seed(3)
    l1, l2 = [0.0, 0.01, 0.02], [0.1, 0.0, 0.05]
    stack = torch.randn(3, 8, 5, generator=g)
    stack.grad = torch.randn(3, 8, 5, generator=g)
    before = stack.grad.clone()
    add_penalty_gradients_([stack], l1=torch.tensor(l1).view(-1, 1, 1), l2=torch.tensor(l2).view(-1, 1, 1))
    for k in range(3):
        w = stack[k].detach().clone().requires_grad_(True)
        (l1[k] * w.abs().sum() + l2[k] / 2 * (w**2).sum()).backward()
        torch.testing.assert_close(stack.grad[k] - before[k], w.grad)


def test_decoupled_decay_before_the_step_equals_torch_adamw():
    """Adam, with our decay w ← w·(1 − lr·λ) applied before each step, is torch.optim.AdamW; per member alike."""
    lr, lam = 0.01, 0.1
    g = torch.Generator().manual_seed(4)
    start = torch.randn(6, 4, generator=g)
    ours, theirs, member_1 = (start.clone().requires_grad_(True) for _ in range(3))
    stack = torch.stack([start, start]).requires_grad_(True)  # member 1 has no decay
    opt_ours, opt_stack = torch.optim.Adam([ours], lr=lr), torch.optim.Adam([stack], lr=lr)
    opt_theirs = torch.optim.AdamW([theirs], lr=lr, weight_decay=lam)
    plain = torch.optim.Adam([member_1], lr=lr)
    factors = torch.tensor([decay_factor(lr, lam), decay_factor(lr, 0.0)]).view(-1, 1, 1)
    for _ in range(5):
        target = torch.randn(6, 4, generator=g)
        for w, opt in ((ours, opt_ours), (theirs, opt_theirs), (stack, opt_stack), (member_1, plain)):
            opt.zero_grad()
            ((w - target) ** 2).sum().backward()
            if w is ours:
                apply_weight_decay_([w], decay_factor(lr, lam))
            elif w is stack:
                apply_weight_decay_([w], factors)
            opt.step()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(stack[0], theirs)
    torch.testing.assert_close(stack[1], member_1)


def test_max_norm_per_member_on_a_stack_bounds_each_members_columns_as_the_single_layout_does():
    """A stack [K, in, out] (unit_dim=-1): each member's hidden units (columns) are held to its own c, a member
    with inf is untouched, and every member's weights are bit for bit what the [out, in] layout gives."""
    g = torch.Generator().manual_seed(5)
    singles = [torch.randn(30, 12, generator=g) * torch.linspace(0.1, 1.5, 30).unsqueeze(1) for _ in range(3)]
    limits = [3.0, 1.0, math.inf]
    stack = stack_of(singles)
    apply_max_norm_([stack], torch.tensor(limits).view(-1, 1, 1), unit_dim=-1)
    for k, (single, c) in enumerate(zip(singles, limits)):
        before = single.clone()
        if math.isinf(c):
            assert torch.equal(stack[k], before.t())
            continue
        apply_max_norm_([single], c)
        assert torch.equal(stack[k], single.t())
        assert torch.all(stack[k].norm(dim=0) <= c * (1 + 1e-6))
        assert (before.norm(dim=1) > c).any()


def test_early_stopping_stops_after_patience_epochs_without_a_lower_loss_and_keeps_the_best_weights():
    losses = [3.0, 2.0, 2.5, 2.0, 2.2, 1.0]  # best at epoch 2; 3, 4 (equal is not lower) and 5 are not better
    tracker = EarlyStopping(patience=3)
    copies = []

    def weights_of(epoch):
        def copy():
            copies.append(epoch)
            return {"w": torch.tensor(epoch)}

        return copy

    stops = [tracker.update(epoch, loss, weights_of(epoch)) for epoch, loss in enumerate(losses[:5], start=1)]
    assert stops == [False, False, False, False, True]  # epoch 5 is the third without a lower loss
    assert (tracker.best_epoch, tracker.best_loss) == (2, 2.0)
    assert copies == [1, 2] and tracker.best_state["w"].item() == 2  # copied only at a new best
    without = EarlyStopping(patience=None)
    assert not any(without.update(e, loss, pytest.fail) for e, loss in enumerate(losses, start=1))
    assert without.best_epoch == 6 and without.best_state is None  # the best epoch is recorded, nothing is kept


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

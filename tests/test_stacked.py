"""The stacked trainer: per member, the single-cell trainer's numbers (dropout off: to float32 rounding)."""

import itertools
import math
import statistics
from dataclasses import asdict, replace
from types import SimpleNamespace

import pytest
import torch
from conftest import FIGURES, make_cell

from dropbench import stacked as stacked_module
from dropbench.config import ModelConfig, OptimizerConfig
from dropbench.data import load_task_data
from dropbench.dropout import effective_keep_rate, kept_units
from dropbench.models import build_model, init_parameters_
from dropbench.regularizers import parse_regularizer
from dropbench.seeding import make_generator
from dropbench.stacked import StackedMLP, fit_stacked, stack_key, stacks, train_stacked
from dropbench.train import fit_cell, train_model

TOL = 1e-5
SGD = OptimizerConfig(lr=0.05, momentum=0.9)
ADAM = OptimizerConfig(name="adam", lr=0.003)
# (regularizer, strengths) of the equivalence cells: one per kind of per-member setting
MIXED = [
    ("none", {}),
    ("l2", {"l2": 1e-3}),
    ("l1+l2", {"l1": 1e-4, "l2": 1e-3}),
    ("max-norm", {"max-norm": 1.0}),
]


def figures(result):
    return {k: v for k, v in asdict(result).items() if k not in ("fit_seconds", "curves")}


def assert_same_figures(stacked, single, tol=TOL):
    a, b = figures(stacked), figures(single)
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], float):
            assert a[key] == pytest.approx(b[key], abs=tol, nan_ok=True), key
        else:
            assert a[key] == b[key], key
    assert len(stacked.curves) == len(single.curves)
    for p, q in zip(stacked.curves, single.curves):
        assert p.epoch == q.epoch
        for name in ("fit_loss", "val_loss", "val_acc"):
            assert getattr(p, name) == pytest.approx(getattr(q, name), abs=tol, nan_ok=True)


def max_difference(state_a, state_b):
    assert state_a.keys() == state_b.keys()
    return max((state_a[k] - state_b[k]).abs().max().item() for k in state_a)


@pytest.mark.parametrize("optimizer", [SGD, ADAM], ids=["sgd-momentum", "adam"])
def test_parameters_after_51_steps_equal_the_single_cell_trainers(optimizer):
    """Dropout off: 3 epochs of digits' 1,079 training rows at batch 64 are 3 x 17 = 51 optimizer steps;
    every member's weights then equal those `train_model` reaches for that cell alone."""
    data = load_task_data("digits")
    assert 3 * math.ceil(len(data.y_train) / 64) >= 50
    cells = [
        make_cell("digits", reg=reg, strengths=strengths, seed=seed, hidden=(32, 32), epochs=3, optimizer=optimizer)
        for seed, (reg, strengths) in enumerate(MIXED)
    ]
    models, results = train_stacked(cells, data)
    for cell, model, result in zip(cells, models, results):
        single, single_result = train_model(cell, data)
        assert max_difference(model.state_dict(), single.state_dict()) < TOL
        assert result.epochs_run == single_result.epochs_run == 3


def test_member_state_dict_round_trips_through_an_mlp():
    data = load_task_data("digits")
    cells = [make_cell("digits", seed=seed, hidden=(32, 16)) for seed in range(3)]
    members = []
    for cell in cells:
        model = build_model(cell.task.model, data.input_shape, data.n_outputs, cell.layer_keep_rates, 1.0)
        init_parameters_(model, make_generator(cell.task.name, cell.seed, "init"))
        members.append(model)
    stack = StackedMLP.from_members(members, [(1.0, 1.0, 1.0)] * 3, [torch.Generator()] * 3)
    assert [tuple(w.shape) for w in stack.weights] == [(3, 64, 32), (3, 32, 16), (3, 16, 16)]  # [K, in, out], padded
    x = data.inputs(data.x_val[:50])
    out = stack.forward(x, train=False, shared=True)
    for k, member in enumerate(members):
        fresh = build_model(cells[k].task.model, data.input_shape, data.n_outputs, cells[k].layer_keep_rates, 1.0)
        fresh.load_state_dict(stack.member_state_dict(k))
        assert max_difference(fresh.state_dict(), member.state_dict()) == 0.0
        member.eval()
        assert torch.allclose(out[k], member(x), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer", [OptimizerConfig(lr=0.1, momentum=0.9), OptimizerConfig(name="adam", lr=0.01)], ids=["sgd", "adam"]
)
def test_final_figures_equal_fit_cells_with_early_stopping_and_max_norm(optimizer):
    """Members stop at different epochs (taken out of the stack then, their optimizer state carried over
    to the smaller stack); the others train on unchanged."""
    data = load_task_data("synthetic")
    specs = [
        ("early-stopping", {"early-stopping": 2}, 0),
        ("early-stopping", {"early-stopping": 4}, 1),
        ("max-norm+early-stopping", {"max-norm": 1.5, "early-stopping": 3}, 2),
        ("weight-decay", {"weight-decay": 0.05}, 3),
        ("none", {}, 4),
    ]
    cells = [
        make_cell("synthetic", reg=reg, strengths=strengths, seed=seed, hidden=(64, 64), epochs=12, optimizer=optimizer)
        for reg, strengths, seed in specs
    ]
    stacked = fit_stacked(cells, data)
    singles = [fit_cell(cell, data) for cell in cells]
    for result, single in zip(stacked, singles):
        assert_same_figures(result, single)
    epochs = [r.epochs_run for r in singles]
    assert min(epochs) < 12 and len(set(epochs)) >= 3  # early stopping did happen, at different epochs
    assert all(r.status == "ok" for r in stacked)


def test_regression_and_train_size_subsample():
    data = load_task_data("diabetes")
    cells = [
        replace(make_cell("diabetes", reg=reg, strengths=s, seed=seed, hidden=(32,), epochs=4), train_size=150)
        for seed, (reg, s) in enumerate(MIXED)
    ]
    for result, cell in zip(fit_stacked(cells, data), cells):
        single = fit_cell(cell, data)
        assert math.isnan(result.test_acc) and math.isnan(single.test_acc)
        assert_same_figures(result, single)


@pytest.mark.slow
def test_with_dropout_stacked_and_single_accuracies_agree_over_seeds():
    """Keep 0.5: over 8 seeds the stacked and the single-cell test accuracies are indistinguishable."""
    data = load_task_data("synthetic")
    cells = [make_cell("synthetic", keep=0.5, seed=seed, hidden=(64,), epochs=10) for seed in range(8)]
    stacked = [r.test_acc for r in fit_stacked(cells, data)]
    single = [fit_cell(cell, data).test_acc for cell in cells]
    spread = math.sqrt(statistics.variance(stacked) / 8 + statistics.variance(single) / 8)
    assert abs(statistics.mean(stacked) - statistics.mean(single)) < 3 * spread + 0.005


@pytest.mark.parametrize(
    "hidden_keeps",
    [(0.5, 0.9, 1.0), (0.25, 0.75), (0.8, 0.9)],
    ids=["mixed lane widths and a member without dropout", "one 2-bit group", "one 16-bit group"],
)
def test_each_member_draws_its_masks_from_its_own_generator(hidden_keeps):
    data = load_task_data("synthetic")
    cells = [make_cell("synthetic", keep=keep, seed=0, hidden=(256,), input_keep=0.8) for keep in hidden_keeps]
    device = data.x_train.device
    generators = [make_generator(cell.seed_key, "masks", device=device) for cell in cells]
    members = [build_model(c.task.model, data.input_shape, data.n_outputs, c.layer_keep_rates, 0.8) for c in cells]
    keeps = [(c.input_keep_rate, *c.layer_keep_rates) for c in cells]
    stack = StackedMLP.from_members(members, keeps, generators)
    kept, scales = stack.site_kept(1, 64, 256)  # the hidden layer's units, [K, 64, 256], and 1/p_eff [K, 1, 1]
    for k, cell in enumerate(cells):
        keep = cell.keep_rate
        if keep < 1.0:  # the very units the single-cell MLP keeps first in this layer, from a fresh generator
            expected = kept_units((64, 256), keep, make_generator(cell.seed_key, "masks", device=device), device)
            assert torch.equal(kept[k], expected)
        assert scales[k].item() == pytest.approx(1 / effective_keep_rate(keep), rel=1e-7)
        assert kept[k].double().mean().item() == pytest.approx(keep, abs=0.02)
    assert not torch.equal(kept[0], kept[1])


def test_rates_near_one_keep_and_preserve_the_mean_at_the_rate_the_lanes_realise():
    """0.999995 rounds to 1: all kept, scale 1, nothing drawn (its 1-bit lanes once kept 7 units in 8);
    65535/65536 is the largest rate below 1 the lanes realise. Expected rates are computed here."""
    data = load_task_data("synthetic")
    hidden_keeps = (0.999995, 65535 / 65536, 0.5)
    cells = [make_cell("synthetic", keep=keep, seed=0, hidden=(256,)) for keep in hidden_keeps]
    generators = [make_generator(cell.seed_key, "masks") for cell in cells]
    states = [g.get_state() for g in generators]
    members = [build_model(c.task.model, data.input_shape, data.n_outputs, c.layer_keep_rates, 1.0) for c in cells]
    stack = StackedMLP.from_members(members, [(1.0, *c.layer_keep_rates) for c in cells], generators)
    rows, width = 4000, 1000
    kept, scales = stack.site_kept(1, rows, width)
    n = rows * width
    for k, keep in enumerate(hidden_keeps):
        p = round(keep * 65536) / 65536
        assert abs(kept[k].double().mean().item() - p) <= 4 * math.sqrt(p * (1 - p) / n), keep
        y = kept[k] * scales[k]  # the layer's output for units that were all 1 before dropout
        assert abs(y.double().mean().item() - 1.0) <= 4 * math.sqrt((1 - p) / p / n), keep
        assert scales[k].item() == pytest.approx(1 / p, rel=1e-7)
    assert torch.equal(generators[0].get_state(), states[0])  # the member at 0.999995 drew nothing
    assert kept[1].double().mean().item() < 1


def test_a_rate_that_rounds_to_one_trains_exactly_as_keep_one_stacked_and_alone():
    data = load_task_data("synthetic")
    near, one = (make_cell("synthetic", keep=keep, input_keep=keep, hidden=(32,), epochs=2) for keep in (0.999995, 1.0))
    assert near.cell_id != one.cell_id  # other mask streams: equal figures mean neither drew a mask
    for near_result, one_result in (fit_stacked([near, one], data), (fit_cell(near, data), fit_cell(one, data))):
        assert figures(near_result) == figures(one_result)
        assert near_result.curves == one_result.curves


def test_stack_key_groups_what_shares_an_architecture_and_a_budget():
    base = make_cell("digits", hidden=(32, 32))
    key = stack_key(base)
    assert key is not None
    same = [
        make_cell("digits", hidden=(32, 32), seed=5),
        make_cell("digits", hidden=(32, 32), keep=0.5, input_keep=0.8),
        make_cell("digits", hidden=(32, 32), keep=(0.5, 0.8)),
        make_cell("digits", reg="l1+l2+max-norm+weight-decay+early-stopping", hidden=(32, 32)),
        make_cell("digits", reg="l2", strengths={"l2": 0.1}, hidden=(32, 32)),
    ]
    assert all(stack_key(cell) == key for cell in same)
    other = [
        make_cell("wine", hidden=(32, 32)),
        make_cell("digits", hidden=(32, 16)),
        make_cell("digits", hidden=(32, 32), epochs=4),
        make_cell("digits", hidden=(32, 32), batch_size=32),
        make_cell("digits", hidden=(32, 32), optimizer=ADAM),
        replace(base, train_size=500),
    ]
    assert len({stack_key(cell) for cell in other} | {key}) == len(other) + 1


@pytest.mark.parametrize(
    "change",
    [
        lambda c: replace(c, dropout="gaussian"),
        lambda c: replace(c, dropout="dropconnect"),
        lambda c: replace(c, mc_samples=10),
        lambda c: replace(c, regularizer=parse_regularizer("mixup")),
        lambda c: replace(c, regularizer=parse_regularizer("label-smoothing")),
        lambda c: replace(c, regularizer=parse_regularizer("kl-sparsity")),
        lambda c: replace(c, regularizer=parse_regularizer("l2+mixup")),
        lambda c: replace(c, task=replace(c.task, model=ModelConfig(kind="cnn", channels=(8,), hidden=(32,)))),
        lambda c: replace(c, task=replace(c.task, model=ModelConfig(hidden=(32,), fixed_pn=True))),
    ],
    ids=["gaussian", "dropconnect", "mc", "mixup", "label-smoothing", "kl-sparsity", "l2+mixup", "cnn", "fixed-pn"],
)
def test_stack_key_is_none_for_what_cannot_be_stacked(change):
    cell = change(make_cell("digits"))
    assert stack_key(cell) is None
    with pytest.raises(ValueError):
        fit_stacked([make_cell("digits"), cell], load_task_data("digits"))


def test_cells_of_different_keys_are_refused():
    with pytest.raises(ValueError):
        fit_stacked([make_cell("digits"), make_cell("digits", epochs=4)], load_task_data("digits"))


def test_a_diverging_member_is_marked_and_the_others_are_untouched():
    data = load_task_data("digits")
    cells = [
        make_cell("digits", reg="l2", strengths={"l2": 1e-3}, seed=0, hidden=(32,), epochs=4),
        make_cell("digits", reg="l2", strengths={"l2": 1e6}, seed=1, hidden=(32,), epochs=4),  # explodes
        make_cell("digits", reg="max-norm+early-stopping", seed=2, hidden=(32,), epochs=4),
    ]
    stacked = fit_stacked(cells, data)
    assert stacked[1].status == "diverged" and "non-finite" in stacked[1].error
    assert stacked[1].epochs_run == 1
    assert all(math.isnan(getattr(stacked[1], name)) for name in FIGURES)
    for k in (0, 2):
        assert stacked[k].status == "ok"
        assert_same_figures(stacked[k], fit_cell(cells[k], data))
    single = fit_cell(cells[1], data)
    assert single.status == "diverged" and single.epochs_run == stacked[1].epochs_run
    assert_same_figures(stacked[1], single)


def test_a_member_diverging_after_its_best_epoch_has_no_figures(monkeypatch):
    """Member 1 diverges at epoch 2 under early stopping: its restored epoch-1 weights are finite and would
    measure real-looking figures, but the run diverged, so it reports none. The others are measured."""
    data = load_task_data("digits")
    cells = [make_cell("digits", reg="early-stopping", seed=seed, hidden=(32,), epochs=4) for seed in range(3)]
    epochs = []
    train_one_epoch = stacked_module._train_one_epoch

    def member_1_diverges_at_epoch_2(stack, *args):
        epochs.append(1)
        fit_sum = train_one_epoch(stack, *args)
        if len(epochs) == 2:
            fit_sum[1] = math.nan
        return fit_sum

    monkeypatch.setattr(stacked_module, "_train_one_epoch", member_1_diverges_at_epoch_2)
    results = fit_stacked(cells, data)
    diverged = results[1]
    assert diverged.status == "diverged" and diverged.epochs_run == 2 and diverged.best_epoch == 1
    assert all(math.isnan(getattr(diverged, name)) for name in FIGURES)
    for k in (0, 2):
        assert results[k].status == "ok" and 0 < results[k].test_acc <= 1


def test_fit_seconds_is_each_members_share_of_the_epochs_it_trained_in(monkeypatch):
    """A clock that advances 1 s per reading makes each epoch of the stack last 1 s: a member's fit_seconds is
    the sum, over the epochs it trained, of 1 / (members training in that epoch). An early-stopped member gets
    less than a full-length one, and the shares add up to the stack's time (its epochs)."""
    ticks = itertools.count()
    monkeypatch.setattr(stacked_module, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    data = load_task_data("synthetic")
    specs = [("early-stopping", {"early-stopping": 1}), ("early-stopping", {"early-stopping": 3}), ("none", {})]
    cells = [
        make_cell("synthetic", reg=reg, strengths=s, seed=seed, hidden=(64, 64), epochs=12, optimizer=SGD)
        for seed, (reg, s) in enumerate(specs)
    ]
    results = fit_stacked(cells, data)
    runs = [r.epochs_run for r in results]
    assert runs[0] < runs[2] == 12  # the first member stopped early
    shares = [sum(1 / sum(other >= epoch for other in runs) for epoch in range(1, run + 1)) for run in runs]
    assert [r.fit_seconds for r in results] == pytest.approx(shares)
    assert sum(r.fit_seconds for r in results) == pytest.approx(max(runs))
    assert results[0].fit_seconds < results[2].fit_seconds
    n_in, n_out = data.input_shape[0], data.n_outputs
    assert all(r.n_params == n_in * 64 + 64 + 64 * 64 + 64 + 64 * n_out + n_out for r in results)  # one member's


def test_image_inputs_normalized_per_batch_train_like_the_single_cell():
    """uint8 images [N, C, H, W] normalized batch by batch (`data.inputs`) reach each member as they reach
    the single-cell MLP, dropout on the inputs and hidden units included."""
    digits = load_task_data("digits")
    generator = torch.Generator().manual_seed(0)

    def images(n):
        return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=generator)

    data = replace(
        digits,
        input_shape=(1, 8, 8),
        x_train=images(len(digits.y_train)),
        x_val=images(len(digits.y_val)),
        x_test=images(len(digits.y_test)),
        input_mean=torch.full((1, 1, 1, 1), 127.5),
        input_inv_std=torch.full((1, 1, 1, 1), 1 / 74.0),
    )
    cells = [
        make_cell("digits", keep=keep, input_keep=0.8, seed=seed, hidden=(32,), epochs=2)
        for seed, keep in [(0, 0.5), (1, 1.0), (2, 0.8)]
    ]
    for result, cell in zip(fit_stacked(cells, data), cells):
        assert_same_figures(result, fit_cell(cell, data))


def test_bf16_cells_train_alone():
    """bf16 rounds a batched matmul differently from a single one on some CPUs: stacking would make a cell's
    figures depend on its company, so such cells never stack."""
    cell = replace(make_cell("synthetic", hidden=(64, 64)), precision="bf16")
    assert stack_key(cell) is None and not stacks(cell)
    assert stack_key(replace(cell, precision="fp32")) is not None


def _mixed_stack(keeps, widths=(30, 40, 24, 3), seed=0):
    """A stack of len(keeps) members with the given (input, hidden...) keep rates, widths not multiples of ALIGN."""
    g = torch.Generator().manual_seed(seed)
    names, params = [], []
    for layer, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        name = "output" if layer == len(widths) - 2 else f"hidden.{layer}"
        names += [f"{name}.weight", f"{name}.bias"]
        weight = torch.randn(len(keeps), n_in, n_out, generator=g) / n_in**0.5
        bias = torch.randn(len(keeps), n_out, generator=g) / 10
        params += [
            torch.stack([stacked_module._padded_param("w.weight", w) for w in weight]),
            torch.stack([stacked_module._padded_param("b.bias", b) for b in bias]),
        ]
    generators = [torch.Generator().manual_seed(100 + k) for k in range(len(keeps))]
    return StackedMLP(names, params, keeps, generators, widths)


@pytest.mark.parametrize("classification", [True, False], ids=["cross-entropy", "mse"])
def test_the_stacks_own_backward_pass_gives_autograds_gradients_bit_for_bit(classification):
    """The stacked trainer computes its gradients by hand (the loss's, then StackedMLP.backward's); through the
    same forward pass (the same masks: generators in the same states), autograd's are the same bits, at every
    layer, for members that drop at different rates, at none, and at rates whose lanes differ in width."""
    keeps = [(0.8, 0.5, 0.5), (1.0, 1.0, 1.0), (1.0, 0.25, 0.75), (0.9, 0.5, 1.0)]
    n_out = 3 if classification else 1
    by_autograd = _mixed_stack(keeps, widths=(30, 40, 24, n_out))
    by_hand = _mixed_stack(keeps, widths=(30, 40, 24, n_out))
    x = torch.randn(len(keeps), 17, 30, generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 3, (len(keeps), 17)) if classification else torch.randn(len(keeps), 17)

    out = by_autograd.forward(x, train=True)
    stacked_module.member_losses(out, target, classification).sum().backward()

    trace = []
    with torch.no_grad():
        out = by_hand.forward(x, train=True, trace=trace)
    losses, out_grad = stacked_module.losses_and_gradient(out, target, classification)
    grads = by_hand.backward(stacked_module._pad_last(out_grad, stacked_module.padded(n_out)), trace)
    assert torch.equal(losses, stacked_module.member_losses(out, target, classification))

    assert len(trace) == 3 and len(grads) == len(by_autograd.params)
    for name, param, grad in zip(by_autograd.names, by_autograd.params, grads):
        assert grad.shape == param.shape, name
        assert torch.equal(grad, param.grad), name
    assert any(g.abs().sum() > 0 for g in grads[:2])  # the first layer learns: the check is not of zeros


@pytest.mark.parametrize(
    "settings",
    [dict(momentum=0.9), dict(momentum=0.9, nesterov=True), dict(momentum=0.0)],
    ids=["momentum", "nesterov", "plain"],
)
def test_the_stacks_sgd_update_is_torch_sgd_step_bit_for_bit(settings):
    """The stack's SGD update (without the Optimizer's per-call wrapping) moves the parameters and momentum
    buffers exactly as torch.optim.SGD.step: the first step (buffers created) and later ones, with the lr and
    momentum changed between steps as a schedule changes them."""
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 32, 48), (2, 48), (2, 48, 16), (2, 16)]
    start = [torch.randn(shape, generator=g) for shape in shapes]
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    make = lambda params: torch.optim.SGD(params, lr=0.05, foreach=True, **settings)  # noqa: E731
    mine, torchs = make(ours), make(theirs)
    for step in range(4):
        grads = [torch.randn(shape, generator=g) for shape in shapes]
        for optimizer, params in ((mine, ours), (torchs, theirs)):
            for p, grad in zip(params, grads):
                p.grad = grad.clone()
            optimizer.param_groups[0]["lr"] = 0.05 * 0.9**step
            if settings["momentum"]:
                optimizer.param_groups[0]["momentum"] = 0.5 + 0.1 * step
        stacked_module._step_(mine)
        torchs.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
            if settings["momentum"]:
                assert torch.equal(mine.state[a]["momentum_buffer"], torchs.state[b]["momentum_buffer"])
    assert not torch.equal(ours[0], start[0])


@pytest.mark.parametrize("block_bytes", [2 << 20, 1], ids=["whole blocks", "a step a block"])
def test_masks_drawn_for_many_steps_at_once_are_those_drawn_step_by_step(monkeypatch, block_bytes):
    """On a CPU the stacked trainer draws the masks of consecutive equal-sized steps together (`step_masks`): each
    member's words from one draw, in the order per-step draws take them. Members that drop at different sites with
    lanes of different widths (so their words for a site sit at different places of their draws), members that
    drop nothing, a short last step: every step's mask is the one `_padded_site_kept` draws step by step, and the
    generators end in the same states."""
    monkeypatch.setattr(stacked_module, "MASK_BLOCK_BYTES", block_bytes)
    keeps = [(0.8, 0.5, 0.5), (1.0, 1.0, 1.0), (1.0, 0.25, 0.75), (0.9, 0.5, 1.0), (0.5, 0.8, 0.3)]
    together, alone = _mixed_stack(keeps), _mixed_stack(keeps)
    rows = [17, 17, 17, 17, 5]
    for step, masks in enumerate(together.step_masks(rows)):
        expected = [alone._padded_site_kept(site, rows[step]) for site in range(3)]
        for site, (got, want) in enumerate(zip(masks, expected)):
            assert (
                got[0].shape == want[0].shape == (len(keeps), rows[step], stacked_module.padded(together.widths[site]))
            )
            assert torch.equal(got[0], want[0]), (step, site)
            assert torch.equal(got[1], want[1])
    assert step == len(rows) - 1
    for a, b in zip(together.generators, alone.generators):
        assert torch.equal(a.get_state(), b.get_state())
    assert not torch.equal(together.generators[0].get_state(), torch.Generator().manual_seed(100).get_state())

"""The rules behind the figures, on constructed numbers: the possible range of a figure, when an axis leaves a point
out, heatmap colour limits, identical lines, and how many lines share a panel (report.plot_rules)."""

import math

import numpy as np
import pandas as pd
import pytest

from dropbench.catalogue import METRICS
from dropbench.errors import UserError
from dropbench.report.plot_rules import (
    MAX_LINES,
    MIN_ZOOM,
    NON_NEGATIVE,
    PERCENT,
    Bounds,
    axis_range,
    band,
    bounds,
    color_scale,
    facets,
    identical_groups,
    identical_label,
    keep_rate_measures,
)


def test_every_metric_has_the_range_it_can_take():
    assert bounds(METRICS["test_acc"]) == bounds(METRICS["test_error"]) == bounds(METRICS["test_ece"]) == PERCENT
    assert bounds(METRICS["gap_acc"]) == Bounds(-100.0, 100.0)  # train − test accuracy, in points
    assert bounds(METRICS["test_loss"]) == bounds(METRICS["fit_seconds"]) == NON_NEGATIVE
    assert bounds(METRICS["gap_loss"]) == Bounds(-math.inf, math.inf)  # a difference of losses


def test_a_band_is_clipped_to_what_is_possible_and_keeps_its_holes():
    low, high = band(np.array([1.0, 99.0, 50.0, 40.0]), np.array([3.0, 3.0, 2.0, np.nan]), PERCENT)
    np.testing.assert_allclose(low, [0.0, 96.0, 48.0, np.nan])
    np.testing.assert_allclose(high, [4.0, 100.0, 52.0, np.nan])


# Figure 9 of the committed CPU-scale replication: keep 0.1 does not learn (66% error), the rest lie in 2.4–7.
FIGURE9 = np.array([66.4, 6.8, 3.8, 3.0, 2.7, 2.7, 2.4, 2.5, 2.5, 2.8])


def test_a_point_that_dwarfs_the_rest_is_left_out_of_the_axis():
    shown = axis_range(FIGURE9, limits=PERCENT)
    assert shown.cut_high and not shown.cut_low
    assert 6.8 < shown.high < 8.0 and shown.low < 2.4  # the rest, with a margin
    below, above = shown.beyond(FIGURE9)
    assert list(above) == [True] + [False] * 9 and not below.any()


def test_without_an_outlier_the_axis_holds_every_point_and_band():
    points = np.array([2.0, 3.0, 4.0, 5.0, 6.0])
    shown = axis_range(points, points - 1.0, points + 1.5, PERCENT)
    assert not shown.cut_high and not shown.cut_low
    assert shown.low <= 1.0 and shown.high >= 7.5
    assert shown.low >= -0.05 * 6.5  # no more than the margin below 0


def test_a_point_whose_leaving_out_would_not_magnify_the_rest_stays_on_the_axis():
    # 12 stands apart from 10–10.3, but the bands of the rest span 9–11.3: leaving it out zooms < 4×.
    points = np.array([10.0, 10.1, 10.2, 10.3, 12.0])
    shown = axis_range(points, points - 1.0, points + 1.0)
    assert MIN_ZOOM * (11.3 - 9.0) > (13.0 - 9.0)
    assert not shown.cut_high and shown.high >= 13.0


def test_an_outlier_below_is_cut_at_the_lower_edge_and_few_points_are_never_cut():
    shown = axis_range(np.array([-40.0, 1.0, 1.2, 1.1, 1.3, 0.9]))
    assert shown.cut_low and not shown.cut_high and shown.low > -40.0
    assert not axis_range(np.array([66.0, 2.0, 3.0])).cut_high  # 3 points: none of them is "the rest"


def test_two_points_that_dwarf_the_rest_are_left_out_together_but_a_cluster_is_not():
    # keep 0.1 and 0.15 both fail to learn: neither alone can go (the other keeps the span), both together can.
    shown = axis_range(np.array([66.0, 64.0, 3.0, 2.5, 2.4, 2.6, 2.7, 2.8]))
    assert shown.cut_high and shown.high < 4.0
    assert list(shown.beyond(np.array([66.0, 64.0, 3.0]))[1]) == [True, True, False]
    # Half the points high, half low: two clusters, both data; leaving out a quarter of them gains nothing.
    assert not axis_range(np.array([60.0, 61.0, 62.0, 63.0, 2.0, 2.5, 3.0, 3.5])).cut_high


def test_a_flat_axis_is_widened_within_the_bounds():
    shown = axis_range(np.zeros(5), limits=PERCENT)
    assert shown.low == pytest.approx(-0.05) and shown.high == pytest.approx(1.05)


def test_heatmap_colours_span_the_values_on_one_side_of_zero():
    scale = color_scale(np.array([[2.0, 3.5], [5.0, np.nan]]))
    assert (scale.vmin, scale.vmax, scale.cmap, scale.extend) == (2.0, 5.0, "Reds", "neither")
    negative = color_scale(np.array([-5.0, -2.0, -3.0]))
    assert (negative.vmin, negative.vmax, negative.cmap) == (-5.0, -2.0, "Blues_r")


def test_heatmap_colours_are_symmetric_around_zero_where_values_straddle_it():
    scale = color_scale(np.array([-1.0, 0.5, 3.0]))
    assert (scale.vmin, scale.vmax, scale.cmap) == (-3.0, 3.0, "RdBu_r")


def test_an_outlying_cell_saturates_instead_of_washing_out_the_rest():
    scale = color_scale(np.array([2.0, 3.0, 2.5, 3.1, 2.2, 2.8, 50.0]))
    assert (scale.vmin, scale.vmax, scale.extend) == (2.0, 3.1, "max")
    assert color_scale(np.array([np.nan, np.nan])).cmap == "RdBu_r"  # nothing to fit: a neutral scale


def test_identical_lines_are_grouped_and_named_together():
    series = {
        "none": np.array([0.5, 1.0, 3.0, 2.0, 0.1, np.nan]),
        "l2 0.0001": np.array([0.5, 1.0, 3.0, 2.0, 0.1, np.nan]),
        "max-norm 3": np.array([0.5, 1.0, 3.0, 2.0 * (1 + 1e-6), 0.1, np.nan]),  # close, not identical
        "l1 1e-05": np.array([0.5, 1.0, 3.0, 2.0, 0.1, 0.2]),  # a CI where the others have none
    }
    groups = identical_groups(series)
    assert groups == [["none", "l2 0.0001"], ["max-norm 3"], ["l1 1e-05"]]
    assert identical_label(groups[0]) == "none = l2 0.0001 (identical)"
    assert identical_label(groups[1]) == "max-norm 3"


def _lines(specs, **columns):
    """A line frame as plot_keep_rate gives facets: (label, regularizer, is the baseline's line, group)."""
    frame = pd.DataFrame(specs, columns=["label", "regularizer", "reference", "group"])
    return frame.assign(**columns) if columns else frame


def test_few_lines_share_one_panel():
    lines = _lines([("none", "none", True, "a"), ("l2 0.01", "l2", False, "a")])
    assert [panel.labels for panel in facets(lines)] == [("none", "l2 0.01")]


def test_many_lines_are_split_by_regularizer_family_each_panel_with_the_baseline():
    specs = [("none", "none", True, "a")]
    specs += [(f"{reg} {s}", reg, False, "a") for reg in ("l2", "l1", "max-norm") for s in (1, 2, 3)]
    panels = facets(_lines(specs))
    assert [p.title for p in panels] == ["l2", "l1", "max-norm"]  # no panel of the baseline alone
    for panel in panels:
        assert panel.labels[0] == "none" and len(panel.labels) == 4 <= MAX_LINES
        assert panel.key == "family"
    assert {label for p in panels for label in p.labels} == {s[0] for s in specs}


def test_the_split_with_the_fewest_panels_that_fit_wins():
    # Figure 10: 5 training-set sizes × input keep 0.8/1, a baseline per size. By input keep, the 0.8 panel
    # would repeat 5 baselines beside its 5 lines (10 > 6); by size, 5 panels of 2.
    sizes = (100, 500, 1000, 5000, 20000)
    specs = [(f"none · n={n} · in {k}", "none", k == 1, f"g{n}") for k in (0.8, 1) for n in sizes]
    lines = _lines(specs, input_keep_rate=[k for k in (0.8, 1.0) for _ in sizes], train_size=[*sizes, *sizes])
    panels = facets(lines)
    assert [p.title for p in panels] == [f"n={n}" for n in sizes]
    assert all(len(p.labels) == 2 for p in panels)
    assert panels[0].labels == ("none · n=100 · in 1", "none · n=100 · in 0.8")  # the baseline first
    # Table 9: no baseline at all, 4 regularizers × input keep 0.8/1: 2 panels of 4 beat 4 panels of 2.
    regs = ("l2", "l1+l2", "l2+kl-sparsity", "max-norm")
    specs = [(f"{r} · in {k}", r, False, "a") for r in regs for k in (0.8, 1)]
    panels = facets(_lines(specs, input_keep_rate=[k for _ in regs for k in (0.8, 1.0)]))
    assert [p.title for p in panels] == ["input keep 0.8", "input keep 1"]
    assert all(len(p.labels) == 4 for p in panels)


def test_a_family_too_large_for_a_panel_is_cut_in_order_with_its_baseline_in_each_part():
    specs = [("none", "none", True, "a")] + [(f"l2 {s}", "l2", False, "a") for s in range(9)]
    panels = facets(_lines(specs))
    assert [p.title for p in panels] == ["l2 (1/2)", "l2 (2/2)"]
    assert [len(p.labels) for p in panels] == [6, 5]
    assert all(p.labels[0] == "none" and len(p.labels) <= MAX_LINES for p in panels)


def test_the_default_keep_rate_figures_and_a_chosen_metric():
    test, train = keep_rate_measures(None, classification=True)
    assert (test.label, train.label) == ("test error (%)", "training error (%)") and test.error
    mean, half = test.display(np.array([0.9]), np.array([0.01]))
    assert mean[0] == pytest.approx(10.0) and half[0] == pytest.approx(1.0)
    (gap,) = keep_rate_measures("gap", classification=False)
    assert gap.column == "gap_loss" and gap.limits == Bounds()
    assert test.published(1.05) == 1.05 and keep_rate_measures("test_acc", True)[0].published(1.05) == 98.95
    assert gap.published(1.05) is None
    with pytest.raises(UserError, match="unknown metric 'nope'"):
        keep_rate_measures("nope", True)


def test_a_wide_interval_is_no_reason_to_cut_a_point_off():
    # Training errors: early stopping's 2.9% (±1.8 over few seeds) beside the rest's 0–1%. The point does not
    # dwarf the rest; only its band would, and a band is not a reason to leave its line off the axis.
    points = np.array([0.42, 0.0, 0.63, 0.0, 0.52, 0.0, 2.9, 0.94])
    half = np.array([0.3, 0.0, 0.5, 0.0, 0.4, 0.0, 1.8, 0.8])
    shown = axis_range(points, *band(points, half, PERCENT), PERCENT)
    assert not shown.cut_high and shown.high >= 2.9 + 1.8


def test_a_baseline_without_lines_of_its_own_group_is_placed_not_lost():
    # Learning curves of Figure 10: three configurations of n=20000 and the baselines of every size, 3 a panel.
    specs = [(f"none keep 0.5 · n=20000 · in {k}", "none", False, "n20000") for k in (0.8, 1)]
    specs += [("none keep 1.0 · n=20000 · in 0.8", "none", False, "n20000")]
    specs += [(f"none keep 1.0 · n={n} · in 1", "none", True, f"n{n}") for n in (100, 500, 1000, 5000, 20000)]
    panels = facets(_lines(specs), limit=3)
    drawn = [label for panel in panels for label in panel.labels]
    assert set(drawn) == {s[0] for s in specs}  # every baseline somewhere
    assert all(len(panel.labels) <= 3 for panel in panels)
    for panel in panels:  # the n=20000 baseline beside every n=20000 configuration
        if any("n=20000" in label and "keep 0.5" in label for label in panel.labels):
            assert "none keep 1.0 · n=20000 · in 1" in panel.labels

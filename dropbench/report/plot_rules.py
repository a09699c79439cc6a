"""The rules behind the figures of `dropbench plot`, as pure functions of the numbers (no matplotlib here), so each
can be tested on constructed values: what a band may span, when an axis leaves a point out, which colours a
heatmap spans, which lines are one line, and how many lines share a panel.

- **Bands** are clipped to what the figure can be (`bounds`): errors and accuracies in [0, 100] %, losses and
  seconds ≥ 0, gaps in points within [−100, 100]. A t-interval over a few seeds reaches past them (an error of
  −2% is not a possible outcome); the clipped band says the same about the possible ones.
- **The axis** (`axis_range`): the fewest points at the top (then at the bottom) of a panel are left out whose
  leaving out magnifies the rest at least `MIN_ZOOM` = 4 times: the rest, bands included, spans at most a
  quarter of what it spans with those points (their bands aside), so with them the axis would be three quarters
  empty. At most a quarter of the points (at least one, and never below `MIN_POINTS` = 4 kept): a cluster at one
  end is data, not an outlier, and leaving out one of its points gains nothing. The figure draws the points left
  out as markers at the edge with their value written beside (a broken axis, without a second panel).
  Interquartile fences flag too much on a keep-rate curve, which is skewed by nature (Figure 9's second-worst
  point, 6.8% beside 2.4–3.8%, lies past Tukey's far-out fence); a log axis would do for errors, but training
  errors and bands reach 0.
- **Heatmap colours** (`color_scale`): the same rule makes the limits robust (a cell that dwarfs the rest
  saturates and the colour bar's arrow says so); values on both sides of 0 get a diverging map symmetric around
  0, values on one side a sequential one from their least to their greatest, so that gaps of 2 to 5 points do
  not all look pale.
- **Identical lines** (`identical_groups`): configurations whose drawn points (means and intervals, at the same
  keep rates) agree to `IDENTICAL_RTOL` are drawn once, and the legend names them all: a regularizer that never
  binds trains exactly the baseline, and two lines on top of each other would hide one.
- **Facets** (`facets`): more than `MAX_LINES` lines in a panel are split into panels, each with the line of its
  baseline (no regularizer, the keep rate varying) for reference: by regularizer family or by what else varies
  (input keep rate, training-set size, model, ...), whichever gives the fewest panels within the limit; where
  none fits, the lines are packed in order into panels within it.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..catalogue import METRIC_CHOICES, Metric, metric_for
from ..errors import UserError

MIN_ZOOM = 4.0  # leave points out only where that magnifies the rest at least 4 times
MAX_CUT = 0.25  # at most a quarter of the points (and at least one): what is left must be the bulk
MIN_POINTS = 4  # of fewer points none is "the rest": nothing is left out
IDENTICAL_RTOL = 1e-9  # bitwise-equal training gives equal means; 9 digits leave room for summation order only
MAX_LINES = 6  # lines a reader tells apart in one panel (colours of tab10, without crowding the bands)
FAMILY = "family"  # the facet key of a regularizer family: 'l2' for every strength of l2
# What else can split a task's lines into panels, in the order they are tried (after the family).
FACET_COLUMNS = ("input_keep_rate", "train_size", "model", "dropout", "layer_keep_rates", "setup")
PAD = 0.05  # a margin of 5% of the span on each side of an axis


@dataclass(frozen=True)
class Bounds:
    """What a figure can be, in display units (NaN-free; ±inf where unbounded)."""

    low: float = -math.inf
    high: float = math.inf

    def clip(self, values: np.ndarray) -> np.ndarray:
        return np.clip(values, self.low, self.high)


PERCENT = Bounds(0.0, 100.0)
NON_NEGATIVE = Bounds(0.0, math.inf)


def bounds(metric: Metric) -> Bounds:
    """A metric's possible range in display units: a percentage (accuracy, error, ECE) in [0, 100], a difference
    of percentages (gap_acc) in [−100, 100], a loss or a time ≥ 0, a difference of losses unbounded."""
    if metric.percent:
        return Bounds(-100.0, 100.0) if metric.signed else PERCENT
    return Bounds() if metric.signed else NON_NEGATIVE


def band(mean: np.ndarray, half: np.ndarray, limits: Bounds) -> tuple[np.ndarray, np.ndarray]:
    """The band mean ± half clipped to `limits` (NaN where either is NaN: no band there)."""
    return limits.clip(mean - half), limits.clip(mean + half)


@dataclass(frozen=True)
class Measure:
    """A figure a row of panels draws: the summary's `column` (its `_mean` and `_ci`), in display units (`scale`;
    `error`: 100 − the accuracy in %), within what it can be (`limits`: bands are clipped to them)."""

    column: str
    label: str
    title: str
    scale: float
    limits: Bounds
    error: bool = False

    def display(self, mean: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means and CI half-widths (fractions or losses, as summarized) in display units."""
        mean, half = np.asarray(mean, dtype=float), np.asarray(half, dtype=float) * self.scale
        return ((1.0 - mean) * 100.0 if self.error else mean * self.scale), half

    def values(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self.display(rows[f"{self.column}_mean"].to_numpy(), rows[f"{self.column}_ci"].to_numpy())

    def published(self, error_pct: float) -> float | None:
        """A published test error (%) in this measure's units; None where the measure is no test error or accuracy."""
        if (self.column == "test_acc" and self.error) or self.column == "test_error":
            return error_pct
        if self.column == "test_acc":
            return 100.0 - error_pct
        return None


TRAIN_TITLE = "training set (eval mode, after training)"


def keep_rate_measures(metric: str | None, classification: bool) -> tuple[Measure, ...]:
    """What the keep-rate plot draws: by default test and training error (MSE for regression), the paper's
    Figure 9; with `metric` (a catalogue name, 'gap' for the task's gap) that figure alone."""
    if metric is None:
        if classification:
            return (
                Measure("test_acc", "test error (%)", "test set", 100.0, PERCENT, error=True),
                Measure("train_acc", "training error (%)", TRAIN_TITLE, 100.0, PERCENT, error=True),
            )
        return (
            Measure("test_loss", "test MSE (standardized target)", "test set", 1.0, NON_NEGATIVE),
            Measure("train_loss", "training MSE (standardized target)", TRAIN_TITLE, 1.0, NON_NEGATIVE),
        )
    if metric not in METRIC_CHOICES:
        raise UserError(f"unknown metric '{metric}'; choose one of: {', '.join(METRIC_CHOICES)}")
    shown = metric_for(metric, classification)
    return (Measure(shown.name, shown.title, "", shown.scale, bounds(shown)),)


@dataclass(frozen=True)
class AxisRange:
    """Limits of an axis and whether points lie beyond them (drawn at that edge, their value written)."""

    low: float
    high: float
    cut_low: bool = False
    cut_high: bool = False

    def beyond(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks of the values drawn at the lower and at the upper edge."""
        with np.errstate(invalid="ignore"):
            return (values < self.low) & self.cut_low, (values > self.high) & self.cut_high


def _span(low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([low, high])
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)


def _padded(low: float, high: float, limits: Bounds) -> tuple[float, float]:
    """[low, high] widened by PAD each side, never more than PAD past a bound: an error axis shows 0 with a
    margin, not −20. A flat range (one value) becomes one unit on each side of it, within the bounds."""
    if high <= low:
        low, high = max(low - 1.0, limits.low), min(high + 1.0, limits.high)
    pad = PAD * (high - low)
    return max(low - pad, limits.low - pad), min(high + pad, limits.high + pad)


def axis_range(
    points: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None, limits: Bounds = Bounds()
) -> AxisRange:
    """The limits of an axis showing `points` with bands [`low`, `high`] (each point's own; NaN: no band): every
    point and band, unless leaving out a few points at one end magnifies the rest MIN_ZOOM times or more (see the
    module's rule); then the rest with their bands, and that end marked as cut."""
    points = np.asarray(points, dtype=float)
    low = points if low is None else np.fmin(np.asarray(low, dtype=float), points)
    high = points if high is None else np.fmax(np.asarray(high, dtype=float), points)
    keep = np.isfinite(points)
    cut = {False: False, True: False}
    if keep.sum() >= MIN_POINTS:
        most = max(1, int(keep.sum() * MAX_CUT))
        for upper in (True, False):
            trimmed = _trim(points, low, high, keep, upper, most)
            if trimmed is not None:
                keep, cut[upper] = trimmed, True
    return AxisRange(*_padded(*_span(low[keep], high[keep]), limits), cut_low=cut[False], cut_high=cut[True])


def _trim(
    points: np.ndarray, low: np.ndarray, high: np.ndarray, keep: np.ndarray, upper: bool, most: int
) -> np.ndarray | None:
    """`keep` less the fewest (up to `most`) points at the `upper` (or lower) end whose leaving out magnifies the
    rest MIN_ZOOM times; None where no such cut exists (a cluster of points at that end is the data, not an
    outlier: leaving out one of them leaves the span as it was)."""
    kept = np.flatnonzero(keep)
    ranked = kept[np.argsort(points[kept], kind="stable")]
    ranked = ranked[::-1] if upper else ranked
    for count in range(1, min(most, len(kept) - MIN_POINTS + 1) + 1):
        rest = keep.copy()
        rest[ranked[:count]] = False
        bulk = _span(low[rest], high[rest])
        # The points left out count by themselves, not by their bands: a wide interval around a point that does
        # not dwarf the rest (2.9% training error beside 0–1%) is no reason to cut its line off.
        whole = _span(np.append(low[rest], points[ranked[:count]]), np.append(high[rest], points[ranked[:count]]))
        if bulk[1] > bulk[0] and whole[1] - whole[0] >= MIN_ZOOM * (bulk[1] - bulk[0]):
            return rest
    return None


@dataclass(frozen=True)
class ColorScale:
    """A heatmap's colour limits and map: `extend` is matplotlib's colour bar extension ('neither', 'min', 'max',
    'both') where cells lie beyond the limits and saturate."""

    vmin: float
    vmax: float
    cmap: str
    extend: str = "neither"


DIVERGING = "RdBu_r"  # no gap white, overfitting red, a test figure better than train blue
RISING = "Reds"  # every gap positive: pale the least overfitting, dark the most
FALLING = "Blues_r"  # every gap negative: dark the most negative


def color_scale(values: np.ndarray) -> ColorScale:
    """Colour limits that fit `values` (NaN ignored): those of the rest where a few cells at one end dwarf them
    (axis_range's rule; those cells saturate); symmetric around 0 on a diverging map where the values straddle 0,
    else from the least to the greatest on a sequential one."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ColorScale(-1.0, 1.0, DIVERGING)
    shown = axis_range(finite)
    low, high = float(finite.min()), float(finite.max())
    if shown.cut_low or shown.cut_high:
        kept = finite[(finite >= shown.low) & (finite <= shown.high)]
        low, high = float(kept.min()), float(kept.max())
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (shown.cut_low, shown.cut_high)
    ]
    if low < 0 < high:
        limit = max(-low, high)
        return ColorScale(-limit, limit, DIVERGING, extend)
    if low == high:  # one value: a range around it, on the side it lies
        pad = abs(low) * 0.5 or 1.0
        return ColorScale(low - pad, high + pad, DIVERGING if low == 0 else (RISING if low > 0 else FALLING), extend)
    return ColorScale(low, high, RISING if low >= 0 else FALLING, extend)


def identical_groups(series: dict[str, np.ndarray]) -> list[list[str]]:
    """Groups of the labels whose vectors (a line's x, means and half-widths, concatenated) are equal: NaN at the
    same places, the rest within IDENTICAL_RTOL. Every label is in one group, groups and their members in the
    order of `series`."""
    groups: list[list[str]] = []
    for label, vector in series.items():
        for group in groups:
            first = series[group[0]]
            if first.shape == vector.shape and np.allclose(
                first, vector, rtol=IDENTICAL_RTOL, atol=1e-12, equal_nan=True
            ):
                group.append(label)
                break
        else:
            groups.append([label])
    return groups


def identical_label(labels: Sequence[str]) -> str:
    """'l2 0.0001 = max-norm 3 (identical)': one drawn line that stands for several configurations."""
    return labels[0] if len(labels) == 1 else " = ".join(labels) + " (identical)"


@dataclass(frozen=True)
class Facet:
    """One panel's lines (labels, in order) and its title ('' where the task needs one panel only); `key` is the
    column it was split by ('' for none), so that panels split by regularizer family share their y axis."""

    title: str
    labels: tuple[str, ...]
    key: str = ""


def _facet_title(key: str, value: object) -> str:
    if key == FAMILY:
        return str(value)
    if key == "input_keep_rate":
        return f"input keep {float(value):g}"  # type: ignore[arg-type]  # a rate: a number in the summary
    if key == "train_size":
        return f"n={int(value) or 'all'}"  # type: ignore[call-overload]  # a size: a whole number in the summary
    if key == "layer_keep_rates":
        return f"layers {value}" if value else "one rate for all layers"
    return str(value)


def facets(lines: pd.DataFrame, limit: int = MAX_LINES) -> list[Facet]:
    """Split a task's lines into panels of at most `limit` lines each, counting the baseline lines each panel
    repeats for reference. `lines` has one row per line, in order: `label`, `regularizer`, `reference` (whether it
    is a baseline's line, drawn in every panel of its group), `group` (which baselines a line is compared with: its
    model, training-set size and setup) and the FACET_COLUMNS it has. Tried: the regularizer family, then each
    FACET_COLUMN that varies; taken: the fewest panels within the limit (ties: the order tried), else the split with
    the smallest panel, its panels then cut in order. Panels that would hold nothing but repeated baselines are
    left out."""
    if len(lines) <= limit:
        return [Facet("", tuple(lines["label"]))]
    keyed = lines.assign(**{FAMILY: lines["regularizer"]})
    keys = [FAMILY, *(c for c in FACET_COLUMNS if c in keyed and keyed[c].nunique(dropna=False) > 1)]
    best: tuple[tuple[int, int, int], list[Facet]] | None = None
    for rank, key in enumerate(keys):
        groups = [rows for _, rows in keyed.groupby(key, sort=False, dropna=False)]
        if len(groups) < 2:
            continue
        whole = [_panel(keyed, rows, key) for rows in groups]
        fits = max(len(panel.labels) for panel in whole) <= limit
        panels = whole if fits else [panel for rows in groups for panel in _panels(keyed, rows, key, limit)]
        panels = _without_bare_references(keyed, panels)
        score = (0 if fits else 1, len(panels), rank)  # a split that needs no cutting first
        if best is None or score < best[0]:
            best = (score, panels)
    if best is None:  # nothing varies to split by: cut in order
        return _panels(keyed, keyed, "", limit)
    return best[1]


def _panel(lines: pd.DataFrame, rows: pd.DataFrame, key: str) -> Facet:
    """`rows`' lines with the baselines they are compared with, as one panel."""
    title = _facet_title(key, rows[key].iloc[0]) if key else ""
    return Facet(title, tuple(_in_order(lines, [*_references(lines, rows), *rows["label"]])), key)


def _references(lines: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """The baseline lines of the groups `rows` belong to, in the order of `lines`."""
    wanted = set(rows["group"])
    return [label for label, group in zip(lines["label"], lines["group"]) if group in wanted and label in _refs(lines)]


def _refs(lines: pd.DataFrame) -> set[str]:
    return set(lines.loc[lines["reference"].astype(bool), "label"])


def _panels(lines: pd.DataFrame, rows: pd.DataFrame, key: str, limit: int) -> list[Facet]:
    """`rows`' lines with their baselines as one panel, or packed in order into panels within `limit`, each with
    the baselines of its own lines, where they do not fit. A baseline none of whose group's other lines is among
    `rows` is a line to place like the others, not a reference to repeat."""
    whole = _panel(lines, rows, key)
    if len(whole.labels) <= limit:
        return [whole]
    refs = _refs(lines)
    group_of = dict(zip(lines["label"], lines["group"]))
    own = [label for label in rows["label"] if label not in refs]
    placed = {group_of[label] for label in own}
    own += [label for label in rows["label"] if label in refs and group_of[label] not in placed]
    chunks: list[list[str]] = []
    for label in _in_order(lines, own):
        if chunks and len(_with_references(lines, [*chunks[-1], label])) <= limit:
            chunks[-1].append(label)
        else:
            chunks.append([label])
    return [
        Facet(f"{whole.title} ({i}/{len(chunks)})".strip(), tuple(_with_references(lines, chunk)), key)
        for i, chunk in enumerate(chunks, start=1)
    ]


def _with_references(lines: pd.DataFrame, labels: list[str]) -> list[str]:
    """`labels` and the baselines of their groups, in order (see _in_order)."""
    return _in_order(lines, [*_references(lines, lines[lines["label"].isin(labels)]), *labels])


def _in_order(lines: pd.DataFrame, labels: list[str]) -> list[str]:
    """`labels` once each, the baselines first, then in the order of `lines` (as the tables list them)."""
    wanted, refs = set(labels), _refs(lines)
    ordered = [label for label in lines["label"] if label in wanted]
    return [label for label in ordered if label in refs] + [label for label in ordered if label not in refs]


def _without_bare_references(lines: pd.DataFrame, panels: list[Facet]) -> list[Facet]:
    """Leave out a panel of baseline lines alone when every one of them is drawn in another panel too."""
    refs = _refs(lines)
    kept: list[Facet] = []
    for i, panel in enumerate(panels):
        others = {label for other in [*kept, *panels[i + 1 :]] for label in other.labels}
        if set(panel.labels) <= refs and set(panel.labels) <= others:
            continue
        kept.append(panel)
    return kept

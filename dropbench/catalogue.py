"""The names the command line offers and the report package reads, defined once and importing nothing heavy
(no torch, pandas or rich), so that `dropbench --help` lists them as fast as it starts.

A metric is a column of the results (or, for test_error, one derived from a column): which way is better,
whether people read it in percent, and how a table shows it.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """A figure of a cell: `higher_is_better` decides what a paired test calls an improvement; `percent`
    figures are fractions shown ×100 (and compare's --max-drop for them is in percentage points)."""

    name: str
    title: str
    higher_is_better: bool
    percent: bool
    digits: int
    explanation: str
    signed: bool = False  # shown with its sign: a difference, such as the gap

    @property
    def scale(self) -> float:
        return 100.0 if self.percent else 1.0

    def format(self, mean: float, half: float) -> str:
        """'+3.1 ± 0.4' in display units; '—' where there is no mean, no '±' where there is no interval."""
        if mean != mean:
            return "—"
        text = f"{mean * self.scale:{'+' if self.signed else ''}.{self.digits}f}"
        return text if half != half else f"{text} ± {half * self.scale:.{self.digits}f}"


_METRICS = (
    Metric("gap_acc", "gap_acc (pp)", False, True, 1, "gap_acc = train acc − test acc in percentage points, eval mode",
           signed=True),
    Metric("gap_loss", "gap_loss", False, False, 3,
           "gap_loss = test loss − train loss (regression: MSE, standardized target), eval mode", signed=True),
    Metric("test_acc", "test accuracy (%)", True, True, 1, "test accuracy in percent"),
    Metric("test_error", "test error (%)", False, True, 2, "test error = 100 − test accuracy, %"),
    Metric("test_loss", "test loss", False, False, 3, "test loss (cross-entropy, or MSE)"),
    Metric("test_ece", "test ECE (%)", False, True, 2, "expected calibration error, 15 bins, %"),
    Metric("val_acc", "validation accuracy (%)", True, True, 1, "validation accuracy in percent"),
    Metric("val_loss", "validation loss", False, False, 3, "validation loss (cross-entropy, or MSE)"),
    Metric("train_acc", "training accuracy (%)", True, True, 1, "training accuracy in percent, eval mode"),
    Metric("train_loss", "training loss", False, False, 3, "training loss (cross-entropy, or MSE), eval mode"),
    Metric("fit_seconds", "fit seconds", False, False, 2, "training time in seconds"),
)  # fmt: skip
METRICS: dict[str, Metric] = {metric.name: metric for metric in _METRICS}
HIGHER_IS_BETTER = frozenset(name for name, metric in METRICS.items() if metric.higher_is_better)
PERCENT_METRICS = frozenset(name for name, metric in METRICS.items() if metric.percent)
# Not a column: the gap a task has, gap_acc for a classification task and gap_loss for a regression one. A
# report shows each task in its own units; compare, which holds every configuration to one --max-drop, cannot.
GAP = "gap"
METRIC_CHOICES = (GAP, *METRICS)
METRIC_HELP = (
    "gap: gap_acc on classification tasks, gap_loss on regression ones (report only: compare holds every "
    "configuration to one --max-drop, so it takes gap_acc or gap_loss). Higher is better for test_acc, val_acc "
    "and train_acc, lower for the others."
)


def metric_for(name: str, classification: bool) -> Metric:
    """The metric `name` stands for on a task: 'gap' is gap_acc for classification, gap_loss for regression."""
    if name == GAP:
        name = "gap_acc" if classification else "gap_loss"
    return METRICS[name]


# The paired tests allowed to mark a result: both are exact under the null at any number of seeds, and hold their
# false-positive rate with whole-example accuracies and common random numbers in the simulation of
# tests/test_significance_simulation.py. The t-test assumes normal differences, which a few seeds of
# whole-example accuracies are not (the unguarded form marked 12% of null tasks there): it serves
# intervals, not marks.
MARK_METHODS = ("sign-flip", "wilcoxon")
# The exact sign-flip test: valid at any number of seeds for any distribution of the differences that is
# symmetric under the null (which swapping a configuration with its baseline within a seed guarantees),
# ties and whole-example accuracies included. Its price: p >= 2 / 2^n, so marks need enough seeds.
DEFAULT_METHOD = "sign-flip"

# Published numbers packaged in dropbench/references/NAME.csv.
REFERENCES = ("srivastava2014",)
PLOT_FORMATS = ("png", "svg")

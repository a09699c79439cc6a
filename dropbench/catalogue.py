"""The names the command line offers and the library reads, defined once and importing nothing heavy (no
torch, pandas or rich), so that `dropbench --help` lists them as fast as it starts: the regularizers and
their default strengths, the dropout kinds, the metrics and their direction, the marking tests.

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
    Metric(
        "gap_acc",
        "gap_acc (pp)",
        False,
        True,
        1,
        "gap_acc = train acc − test acc in percentage points, eval mode",
        signed=True,
    ),
    Metric(
        "gap_loss",
        "gap_loss",
        False,
        False,
        3,
        "gap_loss = test loss − train loss (regression: MSE, standardized target), eval mode",
        signed=True,
    ),
    Metric("test_acc", "test accuracy (%)", True, True, 1, "test accuracy in percent"),
    Metric("test_error", "test error (%)", False, True, 2, "test error = 100 − test accuracy, %"),
    Metric("test_loss", "test loss", False, False, 3, "test loss (cross-entropy, or MSE)"),
    Metric("test_ece", "test ECE (%)", False, True, 2, "expected calibration error, 15 bins, %"),
    Metric("val_acc", "validation accuracy (%)", True, True, 1, "validation accuracy in percent"),
    Metric("val_loss", "validation loss", False, False, 3, "validation loss (cross-entropy, or MSE)"),
    Metric("train_acc", "training accuracy (%)", True, True, 1, "training accuracy in percent, eval mode"),
    Metric("train_loss", "training loss", False, False, 3, "training loss (cross-entropy, or MSE), eval mode"),
    Metric("fit_seconds", "fit seconds", False, False, 2, "training time in seconds"),
)
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
PLOT_DPI = 150  # png: sharp on a screen and in print at a column's width, a few hundred kB a figure


def plot_format(name: str) -> str:
    """The plot format a file name asks for by its suffix ('trend.svg' -> 'svg'); '' when it names none."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return suffix if suffix in PLOT_FORMATS else ""


@dataclass(frozen=True)
class RegularizerInfo:
    """A regularizer: what it does (`summary`, and `brief` for `run --help`), what its strength means, and its
    default strength (None: it takes none). `regularizers.py` implements each one."""

    name: str
    summary: str
    strength_meaning: str
    default_strength: float | None
    brief: str = ""


REGULARIZERS: dict[str, RegularizerInfo] = {
    info.name: info
    for info in [
        RegularizerInfo("none", "no regularizer besides the keep rate (the baseline at keep rate 1.0)", "", None),
        RegularizerInfo(
            "l1",
            "L1 penalty on weights: λ·Σ|w|, subgradient λ·sign(w)",
            "λ",
            1e-5,  # an order below L2: the L1 subgradient does not shrink with the weight
            "penalty λ·Σ|w| on weights",
        ),
        RegularizerInfo(
            "l2",
            "L2 penalty on weights: (λ/2)·Σw², gradient λ·w (= SGD weight_decay λ)",
            "λ",
            1e-4,  # common weight-decay value for MLPs of this size; strong enough to show, weak enough to fit
            "penalty (λ/2)·Σw² on weights (= SGD weight_decay)",
        ),
        RegularizerInfo(
            "max-norm",
            "after every step, rescale each unit's incoming weight vector to norm ≤ c (hidden layers)",
            "c",
            3.0,  # Srivastava et al. 2014 report c between 3 and 4 working best
            "each hidden unit's incoming weights rescaled to norm ≤ c",
        ),
        RegularizerInfo(
            "weight-decay",
            "decoupled weight decay (AdamW-style): w ← w·(1 − lr·λ) before each step, outside the gradient",
            "λ",
            1e-2,  # torch.optim.AdamW's default
            "decoupled decay w ← w·(1 − lr·λ) (AdamW-style)",
        ),
        RegularizerInfo(
            "kl-sparsity",
            "β·Σ_j KL(ρ ‖ q_j), Bernoulli KL (Ng 2011) with q_j = m_j/(1 + m_j), m_j the batch mean of ReLU "
            "unit j: every unit keeps a gradient; target ρ = 0.05 unless [regularizer.kl-sparsity] target is set",
            "β",
            1e-3,  # small beside a cross-entropy of order 1: the paper tunes it on validation data
            "β·Σ KL(ρ‖m/(1+m)) over hidden units, m a unit's batch mean, ρ = 0.05",
        ),
        RegularizerInfo(
            "label-smoothing",
            "train on targets (1 − ε)·one-hot + ε/K (classification only; figures use plain cross-entropy)",
            "ε",
            0.1,  # Szegedy et al. 2016
            "targets (1 − ε)·one-hot + ε/K",
        ),
        RegularizerInfo(
            "mixup",
            "train on convex mixes of example pairs and of their targets, λ ~ Beta(α, α) per batch",
            "α",
            0.2,  # Zhang et al. 2018 use 0.1 to 0.4 on ImageNet-size data
            "convex mixes of example pairs, λ ~ Beta(α, α)",
        ),
        RegularizerInfo(
            "early-stopping",
            "stop after `patience` epochs without a lower validation loss; restore the best weights",
            "patience (epochs)",
            10,  # long enough to ride out noisy validation losses on small splits
            "stop after that many epochs without a lower validation loss",
        ),
    ]
}


@dataclass(frozen=True)
class DropoutKind:
    """A kind of dropout, keyed like every kind by the keep rate p; `dropout.py` implements each one."""

    name: str
    summary: str
    brief: str


DROPOUT_KINDS: dict[str, DropoutKind] = {
    kind.name: kind
    for kind in [
        DropoutKind(
            "bernoulli",
            "inverted Bernoulli dropout: each unit kept with probability p and scaled by 1/p",
            "inverted dropout: x·m/p, m ~ Bernoulli(p) per unit and example",
        ),
        DropoutKind(
            "gaussian",
            "multiplicative Gaussian noise of mean 1 and variance (1 - p)/p per unit",
            "multiplicative noise N(1, (1−p)/p)",
        ),
        DropoutKind(
            "dropconnect",
            "DropConnect: each weight of a Linear layer kept with probability p, biases never masked",
            "Bernoulli mask on the weights of hidden layers (one mask per batch)",
        ),
        DropoutKind(
            "alpha",
            "alpha dropout for SELU nets: dropped units set to -lambda*alpha, then affine back to mean 0, var 1",
            "for SELU MLPs: keeps mean 0 and variance 1 (Klambauer et al. 2017)",
        ),
        DropoutKind(
            "spatial",
            "spatial dropout: whole channels of a conv feature map kept with probability p",
            "whole channels of conv maps (cnn models)",
        ),
    ]
}


def run_epilog() -> str:
    """The regularizers and dropout kinds as `dropbench run --help` lists them (`\b`: click keeps the lines)."""
    lines = ["\b", "Regularizers (--reg; combine with +, e.g. max-norm+early-stopping), strength and default:"]
    for info in REGULARIZERS.values():
        default = (
            "-" if info.default_strength is None else f"{info.strength_meaning.split()[0]} {info.default_strength:g}"
        )
        lines.append(f"  {info.name:<16} {default:<15} {info.brief}".rstrip())
    lines += ["", "\b", "Dropout kinds (--dropout), all keyed by the keep rate p:"]
    lines += [f"  {kind.name:<12} {kind.brief}" for kind in DROPOUT_KINDS.values()]
    return "\n".join(lines) + "\n"

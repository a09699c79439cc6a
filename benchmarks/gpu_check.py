"""One prepared run of dropbench on a GPU: do the CUDA paths work, are they right, and how fast are they.

    python3 benchmarks/gpu_check.py --out OUT            # on a CUDA machine: ~4-5 minutes, 450 s at most
    python3 benchmarks/gpu_check.py --smoke --out OUT    # every section shrunk, on the CPU when there is no GPU

Run from the checkout with PYTHONPATH=$PWD (dropbench need not be installed), DROPBENCH_DATA pointing at a
folder holding mnist/ and fashion-mnist/ (the official IDX .gz files) and DROPBENCH_OFFLINE=1.

Sections, in order of importance, each under its own time limit (and all under one overall budget):
  1. env          torch, CUDA, the GPU, the code's version
  2. correctness  every dropout kind on CUDA tensors against its definition; CPU vs CUDA training; stacked vs
                  single-cell training on CUDA; bf16; early stopping, max-norm and the other CUDA code paths
  3. cli          `dropbench run` end to end on the GPU (quick suite; MNIST fp32 and bf16)
  4. speed        real Fashion-MNIST, 784-1024-1024-10: a tutorial loop vs dropbench, fp32 / TF32 / bf16
  5. stacked      the stacked trainer at K = 1, 4, 16, 64 against one-at-a-time training
  6. table9       epochs of the full-length Table 9 net timed, the whole suite's time extrapolated
An exception in a section (or in one check of it) is recorded with its traceback and the run goes on.
OUT/gpu_check.json and OUT/gpu_check.md are rewritten after every check, so a run killed by a timeout
still leaves everything that finished. Tolerances are stated beside every comparison; a comparison out
of tolerance is reported (section status "issues"), never raised.
"""

import argparse
import contextlib
import csv
import hashlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOTAL_BUDGET_S = 450  # the whole script on the GPU; the caller's timeout is 540 s
SMOKE_BUDGET_S = 1500  # on a shared 2-core CPU
# (section, limit in seconds on the GPU); in smoke mode every limit is tripled
LIMITS = {"env": 30, "correctness": 100, "cli": 170, "speed": 90, "stacked": 60, "table9": 90}

# Real-data speed problem: the paper's MNIST net at batch 128 with input keep 0.8 and hidden keep 0.5.
SPEED = {"hidden": (1024, 1024), "batch": 128, "input_keep": 0.8, "keep": 0.5, "lr": 0.05, "momentum": 0.9}


class Sizes:
    """Every size the script uses: full on the GPU, shrunk with --smoke."""

    def __init__(self, smoke: bool) -> None:
        self.smoke = smoke
        self.mask_shape = (512, 512) if smoke else (2048, 2048)
        self.bit_words = 8192 if smoke else 262144
        self.linear = 256 if smoke else 1024  # DropConnect layer width (in = out)
        self.spatial = (64, 64, 4, 4) if smoke else (256, 256, 4, 4)
        self.train_epochs = 2 if smoke else 10
        self.seeds = (0,) if smoke else (0, 1, 2)
        self.es_epochs = 12 if smoke else 20
        self.cnn_rows = 512 if smoke else 20000
        self.cnn_eval_rows = 512 if smoke else 10000
        self.cnn_floor = 0.0 if smoke else 0.5  # smoke: too few rows to learn, the code path is the point
        self.sane_acc = 0.3 if smoke else 0.85  # bf16 digits after train_epochs
        self.speed_rows = 1280 if smoke else None  # None: the whole training split
        self.speed_repeats = 2 if smoke else 5
        self.warm_steps = 3 if smoke else 30
        self.step_blocks = (2, 5) if smoke else (6, 50)  # blocks x steps per block, taken in turn
        self.mask_reps = (2, 10) if smoke else (5, 200)
        self.stack_ks = (1, 2, 4) if smoke else (1, 4, 16, 64)
        self.stack_rows = 512 if smoke else 25600
        self.stack_val_rows = 256 if smoke else 1024
        self.stack_repeats = 1 if smoke else 2
        self.t9_rows = 1000 if smoke else None
        self.t9_val_rows = 1000 if smoke else None
        self.t9_epochs = 1 if smoke else 2  # timed, after one warm-up epoch
        self.t9_max_k = 4 if smoke else 64


# ------------------------------------------------------------------------------------------------ bookkeeping


class SectionTimeout(BaseException):
    """Raised by SIGALRM when a section runs past its limit (a BaseException: dropbench's `except Exception`
    around a cell must not swallow it)."""


def _on_alarm(signum, frame):
    raise SectionTimeout()


def _clean(value):
    """JSON-safe: NaN and infinities as strings, tuples as lists, anything odd as its repr."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return repr(value)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


class Section:
    """One section's record: status, timings, structured data, markdown lines, checks and errors."""

    def __init__(self, report: "Report", name: str, limit: float) -> None:
        self.report, self.name = report, name
        self.status, self.limit_s, self.elapsed_s = "running", limit, 0.0
        self.data: dict = {}
        self.lines: list[str] = []
        self.checks: list[dict] = []
        self.errors: list[dict] = []
        self.error: str | None = None
        self.traceback: str | None = None

    def line(self, text: str) -> None:
        print(f"  {text}", flush=True)
        self.lines.append(text)

    def check(self, name: str, passed: bool, detail: str) -> bool:
        passed = bool(passed)
        self.checks.append({"check": name, "passed": passed, "detail": detail})
        print(f"  [{'PASS' if passed else 'FAIL'}] {name}: {detail}", flush=True)
        self.save()
        return passed

    @contextlib.contextmanager
    def step(self, name: str):
        """A part of the section: an exception in it is recorded with its traceback, and the section goes on."""
        started = time.perf_counter()
        try:
            yield
        except Exception as error:  # noqa: BLE001 - recorded, and the next step runs
            text = f"{type(error).__name__}: {error}"
            self.errors.append({"step": name, "error": text, "traceback": traceback.format_exc()})
            print(f"  [ERROR] {name}: {text}\n{traceback.format_exc()}", flush=True)
        finally:
            self.data.setdefault("step_seconds", {})[name] = round(time.perf_counter() - started, 3)
            self.save()

    def save(self) -> None:
        self.report.save()

    @property
    def problems(self) -> list[str]:
        failed = [f"{c['check']}: {c['detail']}" for c in self.checks if not c["passed"]]
        errors = [f"{e['step']}: {e['error']}" for e in self.errors]
        return failed + errors + ([f"section {self.status}: {self.error}"] if self.error else [])

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "elapsed_s": round(self.elapsed_s, 2),
            "limit_s": self.limit_s,
            "checks": self.checks,
            "errors": self.errors,
            "error": self.error,
            "traceback": self.traceback,
            "data": self.data,
            "lines": self.lines,
        }


class Report:
    def __init__(self, out: Path, smoke: bool, budget: float) -> None:
        self.out, self.smoke = out, smoke
        self.started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.t0 = time.monotonic()
        self.deadline = Deadline(budget)
        self.sections: list[Section] = []

    def _write(self, name: str, text: str) -> None:
        path = self.out / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)  # a run killed mid-write never leaves half a file

    def save(self) -> None:
        doc = {
            "script": "benchmarks/gpu_check.py",
            "smoke": self.smoke,
            "started": self.started,
            "elapsed_s": round(time.monotonic() - self.t0, 1),
            "sections": [s.as_dict() for s in self.sections],
            "problems": [f"{s.name}: {p}" for s in self.sections for p in s.problems],
        }
        self._write("gpu_check.json", json.dumps(_clean(doc), indent=1))
        self._write("gpu_check.md", self.markdown())

    def markdown(self) -> str:
        out = [
            f"# dropbench GPU check{' (smoke)' if self.smoke else ''}",
            "",
            f"started {self.started}, {time.monotonic() - self.t0:.0f} s so far",
            "",
            "| section | status | seconds | limit |",
            "| --- | --- | --- | --- |",
        ]
        out += [f"| {s.name} | {s.status} | {s.elapsed_s:.1f} | {s.limit_s:.0f} |" for s in self.sections]
        problems = [f"- {s.name}: {p}" for s in self.sections for p in s.problems]
        if problems:
            out += ["", "## Problems", "", *problems]
        for s in self.sections:
            out += ["", f"## {s.name}: {s.status} ({s.elapsed_s:.1f} s of {s.limit_s:.0f})", ""]
            out += s.lines
            if s.checks:
                out += ["", "| check | result | detail |", "| --- | --- | --- |"]
                out += [f"| {c['check']} | {'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |" for c in s.checks]
            for e in s.errors:
                out += ["", f"**error in {e['step']}**: `{e['error']}`", "", "```", e["traceback"].rstrip(), "```"]
            if s.error:
                out += ["", f"**section {s.status}**: `{s.error}`", "", "```", (s.traceback or "").rstrip(), "```"]
        return "\n".join(out) + "\n"

    def run(self, name: str, fn, limit: float) -> None:
        budget = min(limit, self.deadline.left())
        section = Section(self, name, round(budget))
        self.sections.append(section)
        print(f"\n=== {name} (limit {budget:.0f} s) ===", flush=True)
        if budget < 5:
            section.status = "skipped: no time left"
            self.save()
            return
        started = time.monotonic()
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(max(1, math.ceil(budget)))
        try:
            fn(section, Deadline(budget))
            section.status = "ok" if not section.problems else "issues"
        except SectionTimeout:
            section.status = "timeout"
            section.error = f"ran past its limit of {budget:.0f} s; what finished is above"
            section.traceback = traceback.format_exc()
        except Exception as error:  # noqa: BLE001 - recorded, and the next section runs
            section.status = "failed"
            section.error = f"{type(error).__name__}: {error}"
            section.traceback = traceback.format_exc()
            print(section.traceback, flush=True)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            section.elapsed_s = time.monotonic() - started
            print(f"=== {name}: {section.status} in {section.elapsed_s:.1f} s ===", flush=True)
            self.save()


# ------------------------------------------------------------------------------------------------ helpers

CUDA = False
DEV = "cpu"
S = Sizes(False)


def sync() -> None:
    if CUDA:
        import torch

        torch.cuda.synchronize()


def gen(seed: int, device: str | None = None):
    import torch

    g = torch.Generator(device=device or DEV)
    g.manual_seed(seed)
    return g


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 matmuls and convolutions on or off (dropbench's `devices.configure` turns them on for CUDA)."""
    import torch

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def threads(n: int):
    """torch at `n` threads inside the block (dropbench's own helper, set back after it)."""
    from dropbench.opprobe import torch_threads

    return torch_threads(n)


def make_cell(
    task: str,
    *,
    hidden=(64, 64),
    keep=1.0,
    input_keep=1.0,
    reg="none",
    strengths=None,
    seed=0,
    epochs=3,
    batch=64,
    lr=0.05,
    momentum=0.9,
    dropout="bernoulli",
    precision="fp32",
    mc=0,
    train_size=0,
    model=None,
):
    from dropbench.config import Cell, ModelConfig, OptimizerConfig, TaskConfig
    from dropbench.regularizers import parse_regularizer

    config = TaskConfig(
        task, model or ModelConfig(hidden=tuple(hidden)), OptimizerConfig(lr=lr, momentum=momentum), batch, epochs
    )
    return Cell(
        "gpu-check",
        config,
        parse_regularizer(reg, strengths or {}),
        keep,
        input_keep,
        dropout,
        seed,
        train_size,
        mc,
        precision,
    )


def subset(data, train=None, val=None, test=None):
    """The task's data with only the first rows of each split (None: all of it)."""
    return replace(
        data,
        x_train=data.x_train[:train],
        y_train=data.y_train[:train],
        x_val=data.x_val[:val],
        y_val=data.y_val[:val],
        x_test=data.x_test[:test],
        y_test=data.y_test[:test],
    )


def timed(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def z_score(observed: float, expected: float, se: float) -> float:
    return abs(observed - expected) / se if se > 0 else (0.0 if observed == expected else math.inf)


def summary_stats(times: list[float]) -> dict:
    return {"min": min(times), "median": statistics.median(times), "n": len(times)}


def run_cli(args: list[str], timeout: float) -> dict:
    """`python -m dropbench ARGS` from the checkout: exit code, wall time, the ends of stdout and stderr."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "dropbench", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=os.environ.copy(),
        )
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        rc = "timeout"
        stdout = (expired.stdout or b"").decode(errors="replace") if isinstance(expired.stdout, bytes) else ""
        stderr = (expired.stderr or b"").decode(errors="replace") if isinstance(expired.stderr, bytes) else ""
    return {
        "args": args,
        "rc": rc,
        "wall_s": round(time.perf_counter() - started, 2),
        "stdout_tail": stdout[-4000:],
        "stderr_tail": stderr[-3000:],
    }


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------------ 1. env


def sec_env(rec: Section, dl: Deadline) -> None:
    import torch

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "smoke": S.smoke,
        "device_used": DEV,
        "default_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if CUDA:
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            capability=list(torch.cuda.get_device_capability(0)),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            sm_count=props.multi_processor_count,
            cudnn=torch.backends.cudnn.version(),
            bf16_supported=torch.cuda.is_bf16_supported(),
            device_count=torch.cuda.device_count(),
        )
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            info["nvidia_smi"] = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=15,
            ).stdout.strip()
    try:
        info["git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    # Without .git: the sources' git blob ids, digested. The same from a checkout:
    #   git ls-tree -r HEAD dropbench benchmarks/gpu_check.py | awk '{print $4" "$3}' | LC_ALL=C sort | sha256sum
    lines = []
    for path in sorted([*(REPO / "dropbench").rglob("*"), REPO / "benchmarks" / "gpu_check.py"]):
        if path.is_file() and "__pycache__" not in path.parts:
            content = path.read_bytes()
            blob = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
            lines.append(f"{path.relative_to(REPO).as_posix()} {blob}\n")
    info["source_digest"] = hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()
    info["source_files"] = len(lines)
    from dropbench.provenance import git_commit

    info["dropbench_git_commit"] = git_commit() or None
    rec.data.update(info)
    for key in (
        "torch",
        "torch_cuda",
        "gpu",
        "capability",
        "gpu_memory_gib",
        "cudnn",
        "nvidia_smi",
        "git_commit",
        "source_digest",
        "cpu_count",
    ):
        if key in info:
            rec.line(f"{key}: {info[key]}")
    if CUDA:
        with rec.step("first CUDA op"):
            t = timed(lambda: (torch.ones(1024, 1024, device="cuda") @ torch.ones(1024, 1024, device="cuda")).sum())
            rec.line(f"first CUDA matmul (context and cuBLAS start): {t:.2f} s")


# ------------------------------------------------------------------------------------------------ 2. correctness


def _mask_checks(rec: Section) -> None:
    import torch
    import torch.nn.functional as F

    from dropbench import dropout as D

    rows, cols = S.mask_shape
    n = rows * cols
    rec.line(f"masks on {DEV}: {rows}x{cols} = {n:,} units per draw; bands are 5 standard errors (binomial or normal)")

    with rec.step("random bits"):
        words = D.random_words(S.bit_words * 64, 1, gen(1), DEV)  # S.bit_words int64 words
        octets = words.view(torch.uint8).view(-1, 8)  # little-endian: byte j holds bits 8j..8j+7
        shifts = torch.arange(8, device=DEV, dtype=torch.uint8)
        bits = (octets.unsqueeze(-1) >> shifts) & 1  # [W, 8 bytes, 8 bits]
        freq = bits.reshape(len(words), 64).double().mean(0)
        z = ((freq - 0.5).abs() / (0.5 / math.sqrt(len(words)))).cpu()
        worst = int(z.argmax())
        rec.check(
            "every bit of random_words is fair",
            z.max() < 5,
            f"{len(words):,} words; worst bit {worst} (63 = sign bit) at {float(z.max()):.2f} sigma",
        )

    for p in (0.1, 0.25, 0.5, 0.8):
        pe = D.effective_keep_rate(p)
        with rec.step(f"bernoulli p={p}"):
            kept = D.kept_units((rows, cols), p, gen(10), DEV)
            frac = kept.double().mean().item()
            se = math.sqrt(pe * (1 - pe) / n)
            chunks = kept.view(8, -1).double().mean(1)
            chunk_z = float(((chunks - pe).abs() / math.sqrt(pe * (1 - pe) / (n / 8))).max())
            rec.check(
                f"bernoulli p={p}: kept fraction",
                z_score(frac, pe, se) < 5 and chunk_z < 5,
                f"{frac:.5f} vs p_eff {pe:.5f} ({z_score(frac, pe, se):.2f} se; worst of 8 chunks "
                f"{chunk_z:.2f} se; lanes of {D.lane_bits(p)} bits)",
            )
            layer = D.Dropout(p).train()
            layer.set_generator(gen(11))
            x = torch.rand(rows, cols, generator=gen(12), device=DEV) + 0.5
            y = layer(x)
            on = y != 0
            frac = on.double().mean().item()
            scaled_ok = torch.allclose(y[on], x[on] / pe, rtol=1e-6, atol=0)
            dm = y.double().mean().item() - x.double().mean().item()
            se_mean = math.sqrt(x.double().pow(2).mean().item() * (1 - pe) / pe / n)
            rec.check(
                f"bernoulli p={p}: Dropout module",
                z_score(frac, pe, se) < 5 and scaled_ok and abs(dm) < 5 * se_mean,
                f"kept {frac:.5f}; kept units = x/p_eff: {scaled_ok}; mean(y) - mean(x) = {dm:+.2e} "
                f"({abs(dm) / se_mean:.2f} se)",
            )
            layer.eval()
            rec.check(f"bernoulli p={p}: eval is the identity", layer(x) is x or torch.equal(layer(x), x), "eval()")
            # fused ReLU-dropout: the same values and gradients as ReLU then dropout, from the same bits
            z0 = torch.randn(256, 512, generator=gen(13), device=DEV)
            la, lb = D.Dropout(p).train(), D.Dropout(p).train()
            la.set_generator(gen(14))
            lb.set_generator(gen(14))
            a, b = z0.clone().requires_grad_(), z0.clone().requires_grad_()
            ya, yb = la.relu_then_drop_(a * 1.0), lb(torch.relu(b))
            w = torch.randn(256, 512, generator=gen(15), device=DEV)
            (ya * w).sum().backward()
            (yb * w).sum().backward()
            dv, dg = (ya - yb).abs().max().item(), (a.grad - b.grad).abs().max().item()
            rec.check(
                f"bernoulli p={p}: fused relu-dropout = relu then dropout",
                dv <= 1e-6 and dg <= 1e-6,
                f"max |value diff| {dv:.1e}, max |grad diff| {dg:.1e} (tolerance 1e-6)",
            )
            m1, m2, m3 = (D.kept_units((rows, cols), p, gen(s), DEV) for s in (5, 5, 6))
            rec.check(
                f"bernoulli p={p}: masks reproducible from the seed",
                torch.equal(m1, m2) and not torch.equal(m1, m3),
                "same seed: equal; another seed: different",
            )

        with rec.step(f"gaussian p={p}"):
            layer = D.GaussianDropout(p).train()
            layer.set_generator(gen(20))
            c = 2.5
            y = layer(torch.full((rows, cols), c, device=DEV)).double() / c
            var = (1 - p) / p
            mz = z_score(y.mean().item(), 1.0, math.sqrt(var / n))
            rel = y.var().item() / var - 1
            rec.check(
                f"gaussian p={p}: noise mean 1, variance (1-p)/p",
                mz < 5 and abs(rel) < 5 * math.sqrt(2 / n) + 1e-3,
                f"mean {y.mean().item():.5f} ({mz:.2f} se); variance {y.var().item():.5f} vs {var:.5f} "
                f"(rel {rel:+.2e}; tolerance 5*sqrt(2/n)+1e-3)",
            )
            x = torch.randn(64, 32, generator=gen(21), device=DEV)
            rec.check(f"gaussian p={p}: eval is the identity", torch.equal(layer.eval()(x), x), "eval()")
            outs = []
            for seed in (3, 3, 4):
                l2 = D.GaussianDropout(p).train()
                l2.set_generator(gen(seed))
                outs.append(l2(x))
            rec.check(
                f"gaussian p={p}: reproducible",
                torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2]),
                "same seed: equal; another seed: different",
            )

        with rec.step(f"dropconnect p={p}"):
            width = S.linear
            layer = D.DropConnectLinear(width, width, p, device=DEV)
            with torch.no_grad():
                layer.weight.fill_(1.0)
                layer.bias.zero_()
            layer.set_generator(gen(30))
            layer.train()
            y = layer(torch.eye(width, device=DEV))  # y[i, j] = M[j, i] / p_eff
            on = y != 0
            frac, m = on.double().mean().item(), y.double().mean().item()
            nw = width * width
            se, se_mean = math.sqrt(pe * (1 - pe) / nw), math.sqrt((1 - pe) / pe / nw)
            values_ok = torch.allclose(y[on], torch.full_like(y[on], 1 / pe), rtol=1e-6, atol=0)
            rec.check(
                f"dropconnect p={p}: weights kept at p, scaled 1/p, expectation kept",
                z_score(frac, pe, se) < 5 and values_ok and z_score(m, 1.0, se_mean) < 5,
                f"kept {frac:.5f} ({z_score(frac, pe, se):.2f} se); values 1/p_eff: {values_ok}; mean weight "
                f"{m:.5f} ({z_score(m, 1.0, se_mean):.2f} se)",
            )
            with torch.no_grad():
                layer.bias.fill_(3.0)
            biased = layer(torch.zeros(4, width, device=DEV))
            rec.check(f"dropconnect p={p}: bias never masked", bool((biased == 3.0).all()), "zero input gives the bias")
            x = torch.randn(16, width, generator=gen(31), device=DEV)
            layer.eval()
            rec.check(
                f"dropconnect p={p}: eval is a plain linear",
                torch.equal(layer(x), F.linear(x, layer.weight, layer.bias)),
                "eval()",
            )

        with rec.step(f"alpha p={p}"):
            x = F.selu(torch.randn(n, generator=gen(40), device=DEV))
            layer = D.AlphaDropout(p).train()
            layer.set_generator(gen(41))
            y = layer(x)
            a, b = D.alpha_dropout_affine(p)
            d = torch.tensor(D.SELU_SATURATION, device=DEV).mul(a).add(b)
            dropped = torch.isclose(y, d, rtol=0, atol=1e-6)
            frac = 1 - dropped.double().mean().item()
            kept_ok = torch.allclose(y[~dropped], a * x[~dropped] + b, rtol=1e-5, atol=1e-6)
            dmean = y.double().mean().item() - x.double().mean().item()
            dvar = y.double().var().item() - x.double().var().item()
            rec.check(
                f"alpha p={p}: kept at p, dropped to a*alpha'+b, mean and variance kept",
                z_score(frac, pe, math.sqrt(pe * (1 - pe) / n)) < 5
                and kept_ok
                and abs(dmean) < 0.01
                and abs(dvar) < 0.02,
                f"kept {frac:.5f} vs {pe:.5f}; kept = a*x+b: {kept_ok}; mean {dmean:+.4f}, variance "
                f"{dvar:+.4f} from the input's (tolerances 0.01, 0.02)",
            )
            rec.check(f"alpha p={p}: eval is the identity", torch.equal(layer.eval()(x), x), "eval()")

        with rec.step(f"spatial p={p}"):
            layer = D.SpatialDropout(p).train()
            layer.set_generator(gen(50))
            shape = S.spatial
            y = layer(torch.ones(shape, device=DEV)).view(shape[0], shape[1], -1)
            whole = bool((y.amax(-1) == y.amin(-1)).all())
            on = y[..., 0] != 0
            frac, nc = on.double().mean().item(), shape[0] * shape[1]
            m = y.double().mean().item()
            rec.check(
                f"spatial p={p}: whole channels kept at p, expectation kept",
                whole
                and z_score(frac, pe, math.sqrt(pe * (1 - pe) / nc)) < 5
                and z_score(m, 1.0, math.sqrt((1 - pe) / pe / nc)) < 5,
                f"channels whole: {whole}; kept {frac:.4f} vs {pe:.4f}; mean {m:.4f}",
            )
            x = torch.randn(4, 8, 3, 3, generator=gen(51), device=DEV)
            rec.check(f"spatial p={p}: eval is the identity", torch.equal(layer.eval()(x), x), "eval()")

    with rec.step("cpu vs device masks"):
        cpu_mask = D.kept_units((64, 64), 0.5, gen(3, "cpu"), "cpu")
        dev_mask = D.kept_units((64, 64), 0.5, gen(3), DEV).cpu()
        same = torch.equal(cpu_mask, dev_mask)
        rec.data["cpu_and_device_masks_equal_for_one_seed"] = same
        rec.line(
            f"masks from one seed on the CPU and on {DEV} are {'equal' if same else 'different'} "
            "(informational: CPU and CUDA generators are different algorithms)"
        )


def _figures(result) -> dict:
    return {k: getattr(result, k) for k in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")}


def _max_diff(a: dict, b: dict) -> float:
    diffs = [abs(a[k] - b[k]) for k in a if not (math.isnan(a[k]) and math.isnan(b[k]))]
    return max(diffs) if diffs else 0.0


def _training_checks(rec: Section, dl: Deadline) -> None:
    from dropbench.data import load_task_data, load_task_data_on
    from dropbench.stacked import fit_stacked, train_stacked
    from dropbench.train import fit_cell, measure_, train_model

    digits_cpu, digits = load_task_data("digits"), load_task_data_on("digits", DEV)
    n_test = len(digits.y_test)
    E = S.train_epochs

    with rec.step("cpu vs device training"):
        rows = []
        rec.line(f"digits 64-64, {E} epochs, SGD lr 0.05 momentum 0.9, batch 64; CPU (1 thread) vs {DEV} with TF32 off")
        with tf32(False):
            for keep, input_keep in ((1.0, 1.0), (0.5, 0.8)):
                for seed in S.seeds:
                    cell = make_cell("digits", keep=keep, input_keep=input_keep, seed=seed, epochs=E)
                    with threads(1):
                        on_cpu = fit_cell(cell, digits_cpu)
                    on_dev = fit_cell(cell, digits)
                    rows.append(
                        {
                            "keep": keep,
                            "input_keep": input_keep,
                            "seed": seed,
                            "cpu_test_acc": on_cpu.test_acc,
                            "dev_test_acc": on_dev.test_acc,
                            "cpu_val_loss": on_cpu.val_loss,
                            "dev_val_loss": on_dev.val_loss,
                            "status": [on_cpu.status, on_dev.status],
                        }
                    )
                    rec.line(
                        f"keep {keep} input {input_keep} seed {seed}: test acc CPU {on_cpu.test_acc:.4f}, "
                        f"{DEV} {on_dev.test_acc:.4f}; val loss {on_cpu.val_loss:.5f} vs {on_dev.val_loss:.5f}"
                    )
        rec.data["cpu_vs_device"] = rows
        plain = [r for r in rows if r["keep"] == 1.0]
        acc_tol, loss_tol = 3 / n_test, 5e-3
        worst_acc = max(abs(r["cpu_test_acc"] - r["dev_test_acc"]) for r in plain)
        worst_loss = max(abs(r["cpu_val_loss"] - r["dev_val_loss"]) for r in plain)
        rec.check(
            "no dropout: CPU and device train alike",
            worst_acc <= acc_tol and worst_loss <= loss_tol,
            f"worst |test acc diff| {worst_acc:.4f} (tolerance 3 of {n_test} examples = {acc_tol:.4f}), worst "
            f"|val loss diff| {worst_loss:.2e} (tolerance {loss_tol:g}); same init and batch order, float rounding "
            "only",
        )
        dropped = [r for r in rows if r["keep"] < 1.0]
        mean_diff = statistics.mean(r["dev_test_acc"] - r["cpu_test_acc"] for r in dropped)
        rec.check(
            "keep 0.5 / input 0.8: CPU and device accuracies agree",
            abs(mean_diff) <= 0.03,
            f"mean test acc diff (device - CPU) over {len(dropped)} seed(s) {mean_diff:+.4f} (tolerance 0.03: "
            "the masks come from different generators on the two devices)",
        )

    with rec.step("stacked vs single on device"):
        specs = [
            ("none", {}),
            ("l2", {"l2": 1e-3}),
            ("l1+l2", {"l1": 1e-4, "l2": 1e-3}),
            ("max-norm", {"max-norm": 1.0}),
            ("weight-decay", {"weight-decay": 0.05}),
        ]
        cells = [
            make_cell("digits", hidden=(32, 32), reg=reg, strengths=s, seed=i, epochs=3, keep=k, input_keep=ik)
            for k, ik in ((1.0, 1.0), (0.5, 0.8))
            for i, (reg, s) in enumerate(specs)
        ]
        tol = 1e-4
        rows = []
        with tf32(False):
            models, results = train_stacked(cells, digits)
            for cell, model, result in zip(cells, models, results):
                measure_(result, model, digits)
                single, single_result = train_model(cell, digits)
                measure_(single_result, single, digits)
                a, b = model.state_dict(), single.state_dict()
                fig_a, fig_b = _figures(result), _figures(single_result)
                rows.append(
                    {
                        "keep": cell.keep_rate,
                        "input_keep": cell.input_keep_rate,
                        "reg": cell.regularizer.name,
                        "param_diff": max((a[k] - b[k]).abs().max().item() for k in a),
                        "loss_diff": max(abs(fig_a[k] - fig_b[k]) for k in ("train_loss", "val_loss", "test_loss")),
                        "acc_diff": max(abs(fig_a[k] - fig_b[k]) for k in ("train_acc", "val_acc", "test_acc")),
                    }
                )
        rec.data["stacked_vs_single"] = rows
        plain = [r for r in rows if r["keep"] == 1.0]
        worst_param = max(r["param_diff"] for r in plain)
        worst_fig = max(max(r["loss_diff"], r["acc_diff"]) for r in plain)
        rec.check(
            "stacked trainer = single-cell trainer on device, no dropout",
            worst_param < tol and worst_fig < tol,
            f"{len(plain)} cells (none, l2, l1+l2, max-norm, weight-decay), 3 epochs, TF32 off: max |param diff| "
            f"{worst_param:.1e}, max |figure diff| {worst_fig:.1e} (tolerance {tol:g}: float rounding)",
        )
        dropped = [r for r in rows if r["keep"] < 1.0]
        close = sum(r["param_diff"] < tol for r in dropped)
        worst_acc = max(r["acc_diff"] for r in dropped)
        worst_loss = max(r["loss_diff"] for r in dropped)
        n_val = len(digits.y_val)
        rec.check(
            "stacked trainer = single-cell trainer on device, keep 0.5 / input 0.8",
            worst_acc <= 2 / n_val + 1e-9 and worst_loss <= 0.02,
            f"{close} of {len(dropped)} cells within {tol:g} in every parameter; max |acc diff| {worst_acc:.4f} "
            f"(tolerance 2 of {n_val} examples), max |loss diff| {worst_loss:.1e} (tolerance 0.02). With dropout a "
            "pre-activation within float rounding of 0 can fall on the other side of the ReLU in one trainer, and "
            "the runs part (on the CPU, 1 of these 5 cells parts so, by 7e-3 in a parameter)",
        )

    if CUDA:
        with rec.step("tf32 on vs off"):
            cell = make_cell("digits", keep=0.5, input_keep=0.8, epochs=E)
            with tf32(False):
                off = fit_cell(cell, digits)
            with tf32(True):
                on = fit_cell(cell, digits)
            rec.data["tf32"] = {"off_test_acc": off.test_acc, "on_test_acc": on.test_acc}
            rec.line(f"TF32 (informational): test acc off {off.test_acc:.4f}, on {on.test_acc:.4f}")

    with rec.step("bf16"), tf32(True):
        ref = fit_cell(make_cell("digits", keep=0.5, epochs=E), digits)
        rec.line(f"digits 64-64 keep 0.5, {E} epochs: fp32 test acc {ref.test_acc:.4f}")
        for kind in ("bernoulli", "gaussian", "dropconnect", "alpha"):
            r = fit_cell(make_cell("digits", keep=0.5, epochs=E, dropout=kind, precision="bf16"), digits)
            floor = S.sane_acc if kind == "bernoulli" else S.sane_acc - 0.15
            detail = f"status {r.status} {r.error}; test acc {r.test_acc:.4f} (floor {floor:g})"
            if kind == "bernoulli":
                detail += f"; fp32 {ref.test_acc:.4f}, diff {r.test_acc - ref.test_acc:+.4f}"
            rec.check(f"bf16 {kind} trains", r.status == "ok" and r.test_acc >= floor, detail)

    with rec.step("early stopping"):
        synthetic = load_task_data_on("synthetic", DEV)
        cells = [
            make_cell(
                "synthetic",
                reg="early-stopping",
                strengths={"early-stopping": pat},
                seed=s,
                lr=0.1,
                epochs=S.es_epochs,
            )
            for s, pat in ((0, 2), (1, 3), (2, 4))
        ]
        with tf32(False):
            singles = [fit_cell(c, synthetic) for c in cells]
            stacked = fit_stacked(cells, synthetic)
        stopped_any = False
        for cell, single, stack in zip(cells, singles, stacked):
            patience = cell.regularizer.patience
            restored = abs(single.val_loss - single.curves[single.best_epoch - 1].val_loss)
            early = single.epochs_run < S.es_epochs
            stopped_any |= early
            # Stopped: exactly `patience` epochs after the best one; ran to the end: fewer than that since the best.
            consistent = (
                (single.epochs_run - single.best_epoch == patience)
                if early
                else (single.epochs_run - single.best_epoch < patience)
            )
            diff = _max_diff(_figures(single), _figures(stack))
            rec.check(
                f"early stopping, patience {patience}",
                consistent and restored < 1e-5 and diff < 1e-4 and stack.epochs_run == single.epochs_run,
                f"ran {single.epochs_run} of {S.es_epochs} epochs, best {single.best_epoch}; reported val loss is the "
                f"best epoch's (|diff| {restored:.1e}, tolerance 1e-5); stacked trainer ran {stack.epochs_run}, max "
                f"|figure diff| {diff:.1e} (tolerance 1e-4; no dropout here, so float rounding only)",
            )
        rec.check("early stopping stopped a cell early", stopped_any, f"of {len(cells)} cells (lr 0.1, synthetic)")

    with rec.step("max-norm"):
        c = 1.0
        cells = [
            make_cell("digits", reg="max-norm", strengths={"max-norm": c}, lr=0.1, epochs=E, keep=0.5, seed=s)
            for s in (0, 1)
        ]
        free = make_cell("digits", lr=0.1, epochs=E, keep=0.5)
        with tf32(False):
            single, _ = train_model(cells[0], digits)
            stack_models, _ = train_stacked(cells, digits)
            unconstrained, _ = train_model(free, digits)

        def largest(model) -> float:
            return max(w.flatten(1).norm(dim=1).max().item() for w in model.max_norm_weights())

        norms = [largest(single), *(largest(m) for m in stack_models)]
        rec.check(
            "max-norm bounds each hidden unit's incoming weights",
            max(norms) <= c * (1 + 1e-5),
            f"largest norm single {norms[0]:.6f}, stacked {max(norms[1:]):.6f} (c = {c}, tolerance 1e-5 relative); "
            f"without max-norm {largest(unconstrained):.3f}",
        )

    with rec.step("other dropout kinds train"):
        for kind in ("gaussian", "dropconnect", "alpha"):
            r = fit_cell(make_cell("digits", keep=0.5, epochs=max(3, E // 2), dropout=kind), digits)
            rec.check(
                f"{kind} trains on {DEV}",
                r.status == "ok" and r.test_acc > 0.5,
                f"status {r.status} {r.error}; test acc {r.test_acc:.4f} (floor 0.5)",
            )

    with rec.step("conv nets (spatial dropout)"):
        from dropbench.config import ModelConfig

        mnist = subset(load_task_data_on("mnist", DEV), S.cnn_rows, S.cnn_eval_rows, S.cnn_eval_rows)
        for kind, model in (
            ("spatial", ModelConfig(kind="cnn", channels=(16, 32), hidden=(128,))),
            ("bernoulli", ModelConfig(kind="cnn", channels=(16, 32), hidden=(128,), conv_keep=0.8)),
        ):
            cell = make_cell("mnist", model=model, keep=0.5, input_keep=0.8, epochs=1, batch=128, dropout=kind)
            started = time.perf_counter()
            with tf32(True):
                r = fit_cell(cell, mnist)
            rec.check(
                f"cnn with {kind} dropout trains",
                r.status == "ok" and r.test_acc >= S.cnn_floor,
                f"{len(mnist.y_train):,} MNIST rows, 1 epoch: test acc {r.test_acc:.4f} (floor {S.cnn_floor}), "
                f"{time.perf_counter() - started:.1f} s",
            )

    with rec.step("mc dropout, kl-sparsity, mixup, label smoothing"):
        r = fit_cell(make_cell("digits", keep=0.5, epochs=2, mc=5), digits)
        rec.check(
            "mc dropout",
            r.status == "ok" and math.isfinite(r.test_acc_mc) and math.isfinite(r.test_loss_mc),
            f"test acc {r.test_acc:.4f}, MC acc {r.test_acc_mc:.4f}, MC NLL {r.test_loss_mc:.4f}",
        )
        for reg in ("kl-sparsity", "label-smoothing+mixup", "l1+l2+max-norm"):
            r = fit_cell(make_cell("digits", keep=0.5, epochs=2, reg=reg), digits)
            rec.check(
                f"{reg} trains",
                r.status == "ok" and math.isfinite(r.test_loss),
                f"status {r.status} {r.error}; test acc {r.test_acc:.4f}",
            )

    with rec.step("train_size (subsample) on device"):
        cell = make_cell("digits", keep=0.5, epochs=2, train_size=500)
        r = fit_cell(cell, digits)
        rec.check("train_size, single-cell trainer", r.status == "ok", f"test acc {r.test_acc:.4f}")
    with rec.step("train_size (subsample) on device, stacked"):
        r = fit_stacked([cell, replace(cell, seed=1)], digits)[0]
        rec.check("train_size, stacked trainer", r.status == "ok", f"test acc {r.test_acc:.4f}")

    with rec.step("executor path (fit_unit)"):
        from dropbench.executors import fit_unit
        from dropbench.stacked import work_units

        cells = [make_cell("digits", keep=k, epochs=2, seed=s) for k in (0.5, 1.0) for s in (0, 1)]
        units = work_units(cells, jobs=1, stack=True, device=DEV)
        done = [pair for unit in units for pair in fit_unit(unit, DEV)]
        statuses = [r.status for _, r in done]
        rec.check(
            "executors.fit_unit on the device",
            statuses == ["ok"] * len(cells),
            f"{len(units)} unit(s), statuses {statuses}",
        )


def sec_correctness(rec: Section, dl: Deadline) -> None:
    _mask_checks(rec)
    _training_checks(rec, dl)


# ------------------------------------------------------------------------------------------------ 3. cli


def sec_cli(rec: Section, dl: Deadline) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_cli_"))
    device = "cuda" if CUDA else "cpu"
    runs = [
        (
            "quick suite",
            ["run", "--device", device, "--out", str(tmp / "quick.csv"), "-q"]
            + (["--task", "wine", "--seeds", "2", "--epochs", "2", "--jobs", "1"] if S.smoke else []),
            150,
        ),
    ]
    mnist = [
        "run",
        "tasks/mnist.toml",
        "--device",
        device,
        "--keep",
        "0.5,1.0",
        "--reg",
        "none",
        "--seeds",
        "1",
        "--epochs",
        "1" if S.smoke else "2",
        "-q",
    ] + (["--task", "digits", "--jobs", "1"] if S.smoke else [])
    runs.append(("mnist fp32", [*mnist, "--out", str(tmp / "mnist.csv")], 120))
    runs.append(("mnist bf16", [*mnist, "--precision", "bf16", "--out", str(tmp / "mnist-bf16.csv")], 120))
    if not S.smoke:
        runs.append(
            (
                "quick suite --jobs 4",
                ["run", "--device", device, "--jobs", "4", "--out", str(tmp / "quick-jobs4.csv"), "-q"],
                120,
            )
        )
    rec.data["runs"] = {}
    for name, args, limit in runs:
        if name.endswith("--jobs 4") and dl.left() < 75:
            rec.line(f"{name}: skipped, {dl.left():.0f} s left in the section")
            continue
        with rec.step(name):
            timeout = max(10.0, min(limit, dl.left() - 5))
            result = run_cli(args, timeout)
            rec.data["runs"][name] = result
            out = Path(args[args.index("--out") + 1])
            rows = read_rows(out) if out.is_file() else []
            result["rows"] = len(rows)
            result["statuses"] = sorted({r["status"] for r in rows})
            result["devices"] = sorted({r["device"] for r in rows})
            result["fit_seconds_sum"] = round(sum(float(r["fit_seconds"] or 0) for r in rows), 2)
            by_keep: dict[str, list[float]] = {}
            for r in rows:
                if r["test_acc"]:
                    by_keep.setdefault(f"{r['task']} keep {r['keep_rate']}", []).append(float(r["test_acc"]))
            result["test_acc"] = {k: round(statistics.mean(v), 4) for k, v in by_keep.items()}
            rec.line(
                f"{name}: exit {result['rc']} in {result['wall_s']:.1f} s; {len(rows)} rows, statuses "
                f"{result['statuses']}, fit_seconds total {result['fit_seconds_sum']} s; device {result['devices']}"
            )
            rec.line(f"  `dropbench {' '.join(args)}`")
            if name.startswith("mnist"):
                rec.line(f"  test acc: {result['test_acc']}")
            on_device = bool(rows) and all(r["device"].startswith("cuda" if CUDA else "cpu") for r in rows)
            rec.check(
                f"cli {name}",
                result["rc"] == 0 and rows and result["statuses"] == ["ok"] and on_device,
                f"exit {result['rc']}, {len(rows)} rows, statuses {result['statuses']}, device column "
                f"{result['devices']}" + ("" if result["rc"] == 0 else f"; stderr: {result['stderr_tail'][-600:]}"),
            )


# ------------------------------------------------------------------------------------------------ 4. speed


def _build_stack(cells, data):
    """A stacked model as `stacked.train_stacked` builds it, for timing its epochs alone."""
    from dropbench.models import build_model, init_parameters_
    from dropbench.seeding import make_generator
    from dropbench.stacked import StackedMLP, _Members
    from dropbench.train import make_optimizer

    device = data.x_train.device
    models, keeps, generators, orders = [], [], [], []
    for cell in cells:
        model = build_model(
            cell.task.model, data.input_shape, data.n_outputs, cell.layer_keep_rates, cell.input_keep_rate, cell.dropout
        )
        init_parameters_(model, make_generator(cell.task.name, cell.seed, "init"))
        models.append(model.to(device))
        keeps.append((cell.input_keep_rate, *cell.layer_keep_rates))
        generators.append(make_generator(cell.cell_id, "masks", device=device))
        orders.append(make_generator(cell.task.name, cell.seed, "order"))
    stack = StackedMLP.from_members(models, keeps, generators)
    optimizer = make_optimizer(cells[0].task.optimizer, stack.params, fused=False)
    return stack, optimizer, _Members.of(cells, device), orders


def _speed_mode(rec: Section, dl: Deadline, mode: str, data_cpu, data, x_cpu, y_cpu) -> None:
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from dropbench.stacked import _train_one_epoch
    from dropbench.train import Training

    p = SPEED
    bf16 = mode == "bf16"
    precision = "bf16" if bf16 else "fp32"
    n = len(data.y_train)
    warm = subset(data, S.warm_steps * p["batch"])
    x_dev, y_dev = x_cpu.to(DEV), y_cpu.to(DEV)

    def tutorial_model(dropout: bool) -> nn.Module:
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Dropout(1 - p["input_keep"])] if dropout else []
        width = 784
        for h in p["hidden"]:
            layers += [nn.Linear(width, h), nn.ReLU()] + ([nn.Dropout(1 - p["keep"])] if dropout else [])
            width = h
        return nn.Sequential(*layers, nn.Linear(width, 10)).to(DEV)

    def tutorial_step(model, opt, xb, yb) -> None:
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def loader_variant():
        model = tutorial_model(True)
        opt = torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=p["momentum"])
        loader = DataLoader(TensorDataset(x_cpu, y_cpu), batch_size=p["batch"], shuffle=True, pin_memory=CUDA)

        def epoch(rows: int | None = None) -> None:
            model.train()
            for i, (xb, yb) in enumerate(loader):
                if rows is not None and i * p["batch"] >= rows:
                    break
                tutorial_step(model, opt, xb.to(DEV, non_blocking=True), yb.to(DEV, non_blocking=True))

        return epoch

    def resident_variant(dropout: bool = True):
        model = tutorial_model(dropout)
        opt = torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=p["momentum"])

        def epoch(rows: int | None = None) -> None:
            model.train()
            order = torch.randperm(n, device=DEV)[:rows]
            for idx in order.split(p["batch"]):
                tutorial_step(model, opt, x_dev[idx], y_dev[idx])

        return epoch, model, opt

    def dropbench_variant(keep: float, input_keep: float):
        cell = make_cell(
            "fashion-mnist",
            hidden=p["hidden"],
            keep=keep,
            input_keep=input_keep,
            batch=p["batch"],
            lr=p["lr"],
            momentum=p["momentum"],
            precision=precision,
        )
        training = Training(cell, data)
        warm_training = Training(cell, warm)

        def epoch(rows: int | None = None) -> None:
            (warm_training if rows is not None else training).run_epoch()

        return epoch, training

    def stacked_variant():
        cell = make_cell(
            "fashion-mnist",
            hidden=p["hidden"],
            keep=p["keep"],
            input_keep=p["input_keep"],
            batch=p["batch"],
            lr=p["lr"],
            momentum=p["momentum"],
        )
        stack, opt, members, orders = _build_stack([cell], data)

        def epoch(rows: int | None = None) -> None:
            _train_one_epoch(stack, opt, members, [cell], warm if rows is not None else data, orders).sum().item()

        return epoch

    variants = {
        "tutorial, DataLoader over pinned CPU tensors": loader_variant(),
        "tutorial model, GPU-resident batches": resident_variant()[0],
        "dropbench Training (single cell)": dropbench_variant(p["keep"], p["input_keep"])[0],
        "dropbench Training, no dropout": dropbench_variant(1.0, 1.0)[0],
    }
    if not bf16:  # bf16 cells never stack (stacked.stack_key)
        variants["dropbench stack of one (its CUDA path)"] = stacked_variant()
    for fn in variants.values():  # warm-up: kernels, cuBLAS heuristics, allocator
        fn(S.warm_steps * p["batch"])
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(S.speed_repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn))
        if dl.left() < 25:
            rec.line(f"{mode}: stopped repeats early ({dl.left():.0f} s left)")
            break
    result = {}
    base = statistics.median(times["tutorial, DataLoader over pinned CPU tensors"])
    rec.line("")
    rec.line("| mode | variant | min s/epoch | median s/epoch | epochs/s | samples/s | vs tutorial |")
    rec.line("| --- | --- | --- | --- | --- | --- | --- |")
    for name, t in times.items():
        st = summary_stats(t)
        st.update(epochs_per_s=1 / st["median"], samples_per_s=n / st["median"], vs_tutorial=base / st["median"])
        result[name] = st
        rec.line(
            f"| {mode} | {name} | {st['min']:.3f} | {st['median']:.3f} | {st['epochs_per_s']:.2f} | "
            f"{st['samples_per_s']:,.0f} | {st['vs_tutorial']:.2f}x |"
        )
    rec.data.setdefault("epochs", {})[mode] = result
    rec.line("")
    rec.save()

    # Steps taken in turn, in blocks: dropbench's step with and without dropout, the tutorial model's likewise.
    blocks, per_block = S.step_blocks
    _, drop_training = dropbench_variant(p["keep"], p["input_keep"])
    _, plain_training = dropbench_variant(1.0, 1.0)
    _, tut_drop, tut_drop_opt = resident_variant(True)
    _, tut_plain, tut_plain_opt = resident_variant(False)
    batches = torch.randperm(n, device=DEV).split(p["batch"])[: per_block + 1]
    batches = [b for b in batches if len(b) == p["batch"]][:per_block]
    steppers = {
        "dropbench step, dropout": lambda idx: drop_training.step(idx),
        "dropbench step, no dropout": lambda idx: plain_training.step(idx),
        "tutorial step, nn.Dropout": lambda idx: tutorial_step(tut_drop, tut_drop_opt, x_dev[idx], y_dev[idx]),
        "tutorial step, no dropout": lambda idx: tutorial_step(tut_plain, tut_plain_opt, x_dev[idx], y_dev[idx]),
    }
    drop_training.model.train()
    plain_training.model.train()
    for fn in steppers.values():
        for idx in batches[:3]:
            fn(idx)
    step_times: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(blocks):
        for name, fn in steppers.items():
            step_times[name].append(timed(lambda fn=fn: [fn(idx) for idx in batches]) / len(batches))
    steps = {name: summary_stats(t) for name, t in step_times.items()}
    ratio = steps["dropbench step, dropout"]["median"] / steps["dropbench step, no dropout"]["median"]
    tut_ratio = steps["tutorial step, nn.Dropout"]["median"] / steps["tutorial step, no dropout"]["median"]
    rec.data.setdefault("steps", {})[mode] = {
        **steps,
        "dropbench_dropout_cost": ratio,
        "tutorial_dropout_cost": tut_ratio,
    }
    rec.line(
        f"{mode} steps (medians of {blocks} blocks of {len(batches)}): dropbench "
        f"{1e3 * steps['dropbench step, dropout']['median']:.3f} ms with dropout, "
        f"{1e3 * steps['dropbench step, no dropout']['median']:.3f} ms without: **{ratio:.2f}x**; tutorial "
        f"{1e3 * steps['tutorial step, nn.Dropout']['median']:.3f} / "
        f"{1e3 * steps['tutorial step, no dropout']['median']:.3f} ms: {tut_ratio:.2f}x"
    )


def _mask_speed(rec: Section) -> None:
    import torch
    import torch.nn.functional as F

    from dropbench.dropout import Dropout, kept_units

    blocks, reps = S.mask_reps
    g = gen(99)
    results = {}
    for shape, keep in (((128, 784), 0.8), ((128, 1024), 0.5), ((64, 128, 1024), 0.5)):
        x = torch.randn(shape, device=DEV)
        layer = Dropout(keep).train()
        layer.set_generator(gen(98))
        candidates = {
            "kept_units (uint8 mask)": lambda shape=shape, keep=keep: kept_units(shape, keep, g, DEV),
            "Dropout module (mask and scale)": lambda layer=layer, x=x: layer(x),
            "F.dropout": lambda x=x, keep=keep: F.dropout(x, 1 - keep, training=True),
            "torch.rand < p (bool mask)": lambda shape=shape, keep=keep: (
                torch.rand(shape, generator=g, device=DEV) < keep
            ),
        }
        for name, fn in candidates.items():
            fn()
            per_call = [timed(lambda fn=fn: [fn() for _ in range(reps)]) / reps for _ in range(blocks)]
            key = f"{'x'.join(map(str, shape))} p={keep}: {name}"
            results[key] = summary_stats(per_call)
            rec.line(
                f"mask {key}: {1e6 * results[key]['median']:.1f} us per call (min {1e6 * results[key]['min']:.1f})"
            )
    rec.data["mask_us"] = {k: {m: 1e6 * v for m, v in st.items() if m != "n"} for k, st in results.items()}


def sec_speed(rec: Section, dl: Deadline) -> None:
    import torch

    from dropbench.data import load_task_data, load_task_data_on

    data_cpu = subset(load_task_data("fashion-mnist"), S.speed_rows)
    data = subset(load_task_data_on("fashion-mnist", DEV), S.speed_rows)
    x_cpu = data_cpu.inputs(data_cpu.x_train).flatten(1).contiguous()
    y_cpu = data_cpu.y_train
    p = SPEED
    rec.line(
        f"Fashion-MNIST, {len(data.y_train):,} training rows per epoch, 784-{'-'.join(map(str, p['hidden']))}-10, "
        f"batch {p['batch']}, input keep {p['input_keep']}, hidden keep {p['keep']}, SGD lr {p['lr']} momentum "
        f"{p['momentum']}; one epoch per timing, {S.speed_repeats} repeats taken in turn after a warm-up of "
        f"{S.warm_steps} steps; every timing ends with a synchronize. The tutorial uses torch's default init, "
        "nn.Dropout, torch.optim.SGD (foreach) and no per-step .item(); its DataLoader reads float32 CPU tensors "
        "with pin_memory and non_blocking copies (num_workers=0), as the PyTorch tutorials do."
    )
    for mode, allow in (("fp32", False), ("tf32", True), ("bf16", True)):
        if dl.left() < 20:
            rec.line(f"{mode}: skipped, {dl.left():.0f} s left")
            continue
        with rec.step(f"speed {mode}"), tf32(allow):
            _speed_mode(rec, dl, mode, data_cpu, data, x_cpu, y_cpu)
        if CUDA:
            torch.cuda.empty_cache()
    rec.line("")
    with rec.step("mask generation"), tf32(False):
        _mask_speed(rec)


# ------------------------------------------------------------------------------------------------ 5. stacked


def sec_stacked(rec: Section, dl: Deadline) -> None:
    import torch

    from dropbench.data import load_task_data_on
    from dropbench.stacked import train_stacked
    from dropbench.train import train_model

    p = SPEED
    data = subset(load_task_data_on("mnist", DEV), S.stack_rows, S.stack_val_rows, S.stack_val_rows)
    tiny = subset(data, 2 * p["batch"])
    steps = math.ceil(len(data.y_train) / p["batch"])
    rec.line(
        f"MNIST 784-1024-1024-10, batch {p['batch']}, input keep {p['input_keep']}, hidden keep {p['keep']}; one "
        f"epoch of {len(data.y_train):,} rows ({steps} steps) and a validation pass of {len(data.y_val):,} rows "
        f"per cell; TF32 on (dropbench's CUDA setting); min of {S.stack_repeats} run(s) after a warm-up"
    )

    def cells(k: int):
        return [
            make_cell(
                "mnist",
                hidden=p["hidden"],
                keep=p["keep"],
                input_keep=p["input_keep"],
                seed=s,
                epochs=1,
                batch=p["batch"],
                lr=p["lr"],
                momentum=p["momentum"],
            )
            for s in range(k)
        ]

    result = {}
    with tf32(True):
        with rec.step("one at a time"):
            train_model(cells(1)[0], tiny)
            t = min(timed(lambda: train_model(cells(1)[0], data)) for _ in range(S.stack_repeats))
            result["single"] = {"seconds_per_cell": t, "cells_per_s": 1 / t}
            rec.line(f"one at a time (train.train_model): {t:.3f} s per cell, {1 / t:.2f} cells/s")
        single_rate = result.get("single", {}).get("cells_per_s")
        for k in S.stack_ks:
            if dl.left() < 10:
                rec.line(f"K={k}: skipped, {dl.left():.0f} s left")
                break
            with rec.step(f"stacked K={k}"):
                group = cells(k)
                if CUDA:
                    torch.cuda.reset_peak_memory_stats()
                train_stacked(group, tiny)
                t = min(timed(lambda group=group: train_stacked(group, data)) for _ in range(S.stack_repeats))
                peak = torch.cuda.max_memory_allocated() / 2**20 if CUDA else float("nan")
                rate = k / t
                result[f"K={k}"] = {
                    "seconds": t,
                    "cells_per_s": rate,
                    "peak_mib": peak,
                    "vs_one_at_a_time": rate / single_rate if single_rate else None,
                }
                rec.line(
                    f"stacked K={k}: {t:.3f} s, {rate:.2f} cells/s"
                    + (f" = **{rate / single_rate:.2f}x** one at a time" if single_rate else "")
                    + (f"; peak {peak:,.0f} MiB" if CUDA else "")
                )
    rec.data["stacked"] = result


# ------------------------------------------------------------------------------------------------ 6. table9


def sec_table9(rec: Section, dl: Deadline) -> None:
    from dropbench.data import load_task_data_on
    from dropbench.devices import configure
    from dropbench.planning import estimate_seconds
    from dropbench.stacked import stacks, train_stacked, work_units
    from dropbench.suite import load_suite
    from dropbench.train import Training, evaluate

    suite_path = REPO / "tasks" / "srivastava2014-table9-full.toml"
    suite = load_suite(str(suite_path))
    grid = suite.cells()
    epochs = grid[0].task.epochs
    plan_device = "cuda"  # the plan is a function of the cells and the device name: as on the GPU, also in smoke
    units = work_units(grid, jobs=1, stack=True, device=plan_device)
    stacked_units = [u for u in units if u.stacked]
    alone = [u.cells[0] for u in units if not u.stacked]
    sizes = sorted(len(u.cells) for u in stacked_units)
    rec.data.update(
        cells=len(grid),
        epochs=epochs,
        stack_sizes=sizes,
        alone=len(alone),
        cpu_model_estimate_s=estimate_seconds(grid, 1),
    )
    rec.line(
        f"{suite_path.name}: {len(grid)} cells of {epochs} epochs; on {plan_device} dropbench trains them as "
        f"{len(stacked_units)} stack(s) of {sizes} and {len(alone)} cell(s) alone "
        f"({', '.join(sorted({c.regularizer.name for c in alone})) or '-'}: not stackable); the planner's "
        f"CPU-rate estimate for 1 job: {estimate_seconds(grid, 1) / 3600:.1f} h"
    )

    configure(DEV)  # what a dropbench worker sets: TF32 on CUDA
    full = load_task_data_on("mnist", DEV)
    data = subset(full, S.t9_rows, S.t9_val_rows)
    scale = len(full.y_train) / len(data.y_train)  # smoke: time on part of the split, scaled to all of it
    warm = subset(data, 5 * grid[0].task.batch_size)
    per_epoch: dict[str, float] = {}

    def with_epochs(cell, n: int):
        return replace(cell, task=replace(cell.task, epochs=n))

    def single_epochs(name: str, cell) -> None:
        training = Training(cell, data)
        timed(lambda: (training.run_epoch(), evaluate(training.model, data, "val")))  # warm-up epoch
        times = [
            timed(lambda: (training.run_epoch(), evaluate(training.model, data, "val"))) for _ in range(S.t9_epochs)
        ]
        per_epoch[name] = statistics.median(times) * scale
        shown = ", ".join(f"{t:.3f}" for t in times)
        rec.line(f"{name}: {per_epoch[name]:.3f} s per epoch (train + validation pass; timed epochs {shown} s)")

    stackable = [c for c in grid if stacks(c, plan_device)]
    example = next(c for c in grid if c.regularizer.name == "l2" and c.keep_rate == 0.5 and c.input_keep_rate == 0.8)
    with rec.step("single-cell trainer"):
        single_epochs("single cell (train.Training), l2", example)
    if alone:
        with rec.step("cell trained alone"):
            single_epochs(f"single cell, {alone[0].regularizer.name} (trains alone)", alone[0])
    for k in sorted({1, min(max(sizes, default=1), S.t9_max_k)}):
        if dl.left() < 15:
            rec.line(f"stack K={k}: skipped, {dl.left():.0f} s left")
            continue
        with rec.step(f"stacked K={k}"):
            members = stackable[:k]
            train_stacked([with_epochs(c, 1) for c in members], warm)
            t = timed(lambda members=members: train_stacked([with_epochs(c, S.t9_epochs) for c in members], data))
            per_epoch[f"stack K={k}"] = t / S.t9_epochs * scale
            rec.line(f"stack of {k}: {per_epoch[f'stack K={k}']:.3f} s per epoch for all {k} members")
    rec.data["seconds_per_epoch"] = per_epoch

    with rec.step("extrapolation"):
        alone_key = next((k for k in per_epoch if k.endswith("(trains alone)")), None)
        alone_s = len(alone) * epochs * per_epoch[alone_key] if alone else 0.0
        k_max = max(sizes, default=1)
        measured_k = min(k_max, S.t9_max_k)
        lines = {}
        if f"stack K={measured_k}" in per_epoch:
            stack_epoch = per_epoch[f"stack K={measured_k}"] * k_max / measured_k  # smoke: scaled to the real K
            stacked_s = sum(len(u.cells) / k_max * stack_epoch * epochs for u in stacked_units)
            lines["as dropbench runs it on CUDA (stacked)"] = stacked_s + alone_s
        if "stack K=1" in per_epoch:
            lines["--no-stack (every cell a stack of one)"] = len(stackable) * epochs * per_epoch["stack K=1"] + alone_s
        key = "single cell (train.Training), l2"
        if key in per_epoch:
            lines["every cell by the single-cell trainer"] = len(stackable) * epochs * per_epoch[key] + alone_s
        rec.data["extrapolated_s"] = lines
        for name, seconds in lines.items():
            rec.line(f"whole suite, 1 GPU, {name}: **{seconds / 3600:.2f} h** ({seconds:,.0f} s)")
        rec.line(
            "(cells trained one after another in one process; evaluation of the three splits at the end of each "
            "cell adds seconds, not minutes)"
        )

    with rec.step("dry run"):
        tmp = Path(tempfile.mkdtemp(prefix="gpu_check_t9_"))
        device = "cuda" if CUDA else "cpu"
        result = run_cli(
            ["run", str(suite_path.relative_to(REPO)), "--dry-run", "--device", device, "--out", str(tmp / "t9.csv")],
            max(10.0, min(60.0, dl.left() - 3)),
        )
        rec.data["dry_run"] = result
        rec.line(
            f"`dropbench run tasks/{suite_path.name} --dry-run --device {device}`: exit {result['rc']}, "
            f"{result['wall_s']} s"
        )
        rec.line("```")
        for text in result["stdout_tail"].rstrip().splitlines()[-15:]:
            rec.line(text)
        rec.line("```")
        rec.check("dry run", result["rc"] == 0, f"exit {result['rc']} {result['stderr_tail'][-300:]}")


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--smoke", action="store_true", help="every size shrunk; on the CPU when there is no GPU")
    parser.add_argument("--only", help="comma-separated sections to run (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    global CUDA, DEV, S
    S = Sizes(args.smoke)
    report = Report(args.out, args.smoke, SMOKE_BUDGET_S if args.smoke else TOTAL_BUDGET_S)
    import torch

    CUDA = torch.cuda.is_available()
    DEV = "cuda" if CUDA else "cpu"
    torch.set_num_threads(1 if args.smoke or not CUDA else len(os.sched_getaffinity(0)))
    print(f"gpu_check: device {DEV}, smoke {args.smoke}, torch {torch.__version__}, out {args.out}", flush=True)
    if not CUDA and not args.smoke:
        print("gpu_check: no CUDA device; every section runs on the CPU at full size (use --smoke)", flush=True)
    sections = [
        ("env", sec_env),
        ("correctness", sec_correctness),
        ("cli", sec_cli),
        ("speed", sec_speed),
        ("stacked", sec_stacked),
        ("table9", sec_table9),
    ]
    chosen = set(args.only.split(",")) if args.only else None
    for name, fn in sections:
        if chosen is None or name in chosen:
            report.run(name, fn, LIMITS[name] * (3 if args.smoke else 1))
    report.save()
    print(f"\ngpu_check: done in {time.monotonic() - report.t0:.0f} s", flush=True)
    for s in report.sections:
        print(f"  {s.name:12s} {s.status:10s} {s.elapsed_s:6.1f} s  {len(s.problems)} problem(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

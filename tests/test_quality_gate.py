"""Quality gate on the shipped weights (a smaller version of `python -m diffusion.metrics.mnist_gate`).

200 DDIM-50 samples (the gate's sampler and steps) against 200 held-out digits, judged by the
shipped LeNet. The same thresholds reject blurred digits and random noise (checked below), so the
gate can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from diffusion.data.mnist import load_split
from diffusion.metrics.lenet import load_lenet
from diffusion.metrics.mnist_gate import MnistGateReport, draw_samples, evaluate

pytestmark = pytest.mark.slow  # the digit gate samples the shipped DDPM

N = 200
LIMITS = {"fld_factor": 3.0, "min_confident": 0.85, "class_share": (0.03, 0.17)}


@pytest.fixture(scope="module")
def lenet():
    return load_lenet()


@pytest.fixture(scope="module")
def shipped_report(lenet) -> MnistGateReport:
    samples = draw_samples("ddpm-mnist", N, "ddim", 50, seed=0, batch=100)
    report = evaluate(samples, lenet)
    print("\n" + report.table())
    return report


@pytest.mark.slow
def test_judge_is_accurate_on_held_out_digits(lenet, shipped_report: MnistGateReport) -> None:
    assert shipped_report.judge_accuracy >= 0.97
    # the confident-share target is reachable: the real held-out digits meet it
    assert shipped_report.confident_share_held_out >= LIMITS["min_confident"]


def test_shipped_ddpm_passes_the_gate(shipped_report: MnistGateReport) -> None:
    assert shipped_report.failures(**LIMITS) == []


# A tighter FLD floor than the gate's 3x, from what the shipped model (stage 5) measures on this
# 200-sample gate: FLD 2.09x floor, confident 0.865. The earlier shipped models measured here:
# stage 3 1.85x, 0.790 (fails); stage 4 1.77x, 0.850 (passes this small gate; at n=1000 it missed
# the share, 0.845); blurred digits and noise fail it (checked below).
REGRESSION = LIMITS | {"fld_factor": 2.5}


def test_shipped_ddpm_holds_its_measured_quality(shipped_report: MnistGateReport) -> None:
    assert shipped_report.failures(**REGRESSION) == []


@pytest.mark.slow
def test_regression_floor_still_rejects_blur_and_noise(blurred_report: MnistGateReport,
                                                       noise_report: MnistGateReport) -> None:
    assert blurred_report.failures(**REGRESSION)
    assert noise_report.failures(**REGRESSION)


@pytest.fixture(scope="module")
def blurred_report(lenet) -> MnistGateReport:
    digits = load_split("train").images[1000:1000 + N].astype(float)
    blurred = np.stack([gaussian_filter(d, 1.5) for d in digits]).clip(0, 255).astype(np.uint8)
    return evaluate(blurred, lenet)


@pytest.fixture(scope="module")
def noise_report(lenet) -> MnistGateReport:
    return evaluate(np.random.default_rng(0).integers(0, 256, (N, 32, 32)).astype(np.uint8), lenet)


def test_gate_rejects_blurred_digits(blurred_report: MnistGateReport) -> None:
    assert blurred_report.failures(**LIMITS)


def test_gate_rejects_noise(noise_report: MnistGateReport) -> None:
    assert noise_report.failures(**LIMITS)


def test_gate_accepts_real_unseen_style_digits(lenet) -> None:
    """Training digits other than the floor's own pass: the thresholds are not impossible."""
    report = evaluate(load_split("train").images[2000:2000 + N], lenet)
    assert report.failures(**LIMITS) == []
    assert report.memorised_share == 1.0  # they *are* training digits: the copy detector sees it

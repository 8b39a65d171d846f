"""The USL fit recovers known parameters and says when it cannot."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.analysing.usl import MIN_POINTS, fit_usl, usl


def _samples(lam, sigma, kappa, ns, repeats=3, noise=0.01, seed=1):
    rng = np.random.default_rng(seed)
    n = np.repeat(np.asarray(ns, float), repeats)
    x = usl(n, lam, sigma, kappa) * (1 + noise * rng.standard_normal(n.size))
    return n, x


def test_recovers_known_parameters_with_noise():
    lam, sigma, kappa = 12_000.0, 0.04, 0.003
    n, x = _samples(lam, sigma, kappa, [1, 2, 4, 6, 8, 12, 16, 24, 32])
    fit = fit_usl(n, x)
    assert fit.ok and not fit.warnings
    assert fit.lam == pytest.approx(lam, rel=0.03)
    assert fit.sigma == pytest.approx(sigma, abs=0.01)
    assert fit.kappa == pytest.approx(kappa, rel=0.15)
    true_peak = math.sqrt((1 - sigma) / kappa)
    assert fit.peak_n == pytest.approx(true_peak, rel=0.1)
    # the true values lie within a few standard errors
    assert abs(fit.lam - lam) < 4 * fit.lam_err
    assert abs(fit.kappa - kappa) < 4 * fit.kappa_err
    assert fit.ceiling == pytest.approx(float(usl(true_peak, lam, sigma, kappa)), rel=0.05)
    assert 0 < fit.peak_n_err < fit.peak_n


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    lam=st.floats(1e3, 1e6),
    sigma=st.floats(0.0, 0.3),
    kappa=st.floats(1e-4, 5e-2),
)
def test_recovers_peak_from_exact_data(lam, sigma, kappa):
    # Enough counts on both sides of the peak to pin it (N* here is 2.6 .. 100).
    true_peak = math.sqrt((1 - sigma) / kappa)
    ns = sorted({1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, int(2 * true_peak) + 1})
    fit = fit_usl(ns, usl(ns, lam, sigma, kappa))
    assert fit.ok
    assert fit.lam == pytest.approx(lam, rel=1e-3)
    assert fit.peak_n == pytest.approx(true_peak, rel=0.02)


def test_linear_data_has_no_peak_and_no_ceiling():
    n, x = _samples(5000.0, 0.0, 0.0, [1, 2, 4, 8], noise=0.0)
    fit = fit_usl(n, x)
    assert fit.ok
    assert math.isinf(fit.peak_n)
    assert math.isinf(fit.ceiling)
    assert fit.lam == pytest.approx(5000.0, rel=1e-6)


def test_amdahl_only_ceiling_is_lambda_over_sigma():
    n, x = _samples(1000.0, 0.1, 0.0, [1, 2, 4, 8, 16, 32], noise=0.0)
    fit = fit_usl(n, x)
    assert math.isinf(fit.peak_n)
    assert fit.ceiling == pytest.approx(1000.0 / 0.1, rel=0.01)


def test_warns_below_four_counts():
    n, x = _samples(1000.0, 0.05, 0.01, [1, 2, 4])
    fit = fit_usl(n, x)
    assert fit.ok
    assert fit.n_points == 3 < MIN_POINTS
    assert any("not well determined" in w for w in fit.warnings)


def test_single_count_is_not_fitted():
    fit = fit_usl([4, 4, 4], [100.0, 101.0, 99.0])
    assert not fit.ok
    assert math.isnan(fit.peak_n)
    assert any("fewer than 2" in w for w in fit.warnings)


def test_ignores_nan_and_zero_samples():
    n, x = _samples(2000.0, 0.02, 0.001, [1, 2, 4, 8, 16], noise=0.0)
    n = np.append(n, [8, 16])
    x = np.append(x, [0.0, np.nan])  # failed repeats must not drag the fit down
    fit = fit_usl(n, x)
    assert fit.lam == pytest.approx(2000.0, rel=1e-3)
    assert fit.n_samples == 15


def test_exact_fit_is_never_resolved():
    # Three counts, three parameters: the fit passes through every point and
    # its errors are unknown; no peak may be claimed from it.
    fit = fit_usl([1, 2, 4], usl(np.array([1, 2, 4]), 1000.0, 0.05, 0.05))
    assert fit.ok
    assert not fit.kappa_resolved and not math.isfinite(fit.peak_n) or math.isinf(fit.peak_n)
    # the curve drawn is the one the table states (kappa shown as 0 -> drawn as 0)
    drawn = fit.predict_reported(np.array([50.0]))
    assert drawn[0] >= fit.predict(np.array([50.0]))[0]


def test_fit_is_weighted_by_relative_error():
    # A 10% error on the largest point must not drag lambda (the 1-process
    # rate) the way unweighted least squares lets it.
    ns = np.array([1, 2, 4, 8, 16, 32], float)
    x = 1000.0 * ns
    x[-1] *= 0.9
    fit = fit_usl(ns, x)
    assert fit.lam == pytest.approx(1000.0, rel=0.02)

"""Universal Scalability Law fit: what a measured scaling curve predicts beyond it.

Gunther's USL models throughput at N workers as

    X(N) = lambda * N / (1 + sigma * (N - 1) + kappa * N * (N - 1))

``lambda`` is the throughput of one worker, ``sigma`` the contention (the
serial fraction: Amdahl), ``kappa`` the coherency cost (every worker paying
for every other one: what a single shared lock does).  With ``kappa > 0`` the
curve peaks at ``N* = sqrt((1 - sigma) / kappa)`` and falls after it.

The fit is bounded nonlinear least squares (scipy ``curve_fit``, method trf)
over every ok repeat, not only medians, so that repeats weigh in and the
parameter covariance reflects the measured noise.  A fit is a model: it is
reported with its uncertainty and with a warning when the data under it is
thin (fewer than :data:`MIN_POINTS` distinct N, where three parameters are
barely determined).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import curve_fit

#: Fewer distinct process counts than this and the three parameters are not
#: pinned down (3 points fit any 3-parameter curve exactly).
MIN_POINTS = 4
#: Parameters of the model (lambda, sigma, kappa).  A fit through no more
#: distinct counts than this is exact up to the repeats' scatter: its
#: standard errors measure that scatter, not the model, so none of its
#: parameters is ever called resolved.
N_PARAMS = 3
#: lambda is the efficiency base (the single-process rate) only when its
#: relative standard error is at most this.
LAMBDA_MAX_REL_ERR = 0.1

#: Parameter bounds.  sigma is a fraction; kappa above 1 would mean a curve
#: that collapses past N=2, far outside anything a queue shows.
SIGMA_BOUNDS = (0.0, 1.0)

#: kappa at or below this is treated as zero (no peak): the optimiser parks a
#: parameter it does not need a hair above its bound, which would otherwise
#: print as an absurd N* of 1e14.
KAPPA_ZERO = 1e-12
#: Likewise for sigma: below this the asymptote lambda/sigma lies past a
#: million workers, i.e. the fit sees no ceiling at all.
SIGMA_ZERO = 1e-6
#: A fitted sigma or kappa within this many standard errors of 0 is treated
#: as 0: bounded least squares approaches a bound only asymptotically, so a
#: perfectly linear curve comes back with kappa = 1e-10 and an N* of 50,000
#: that no data supports.
RESOLVE_SIGMAS = 2.0
KAPPA_BOUNDS = (0.0, 1.0)


def usl(n, lam, sigma, kappa):
    """USL throughput at ``n`` workers (vectorised over ``n``)."""
    n = np.asarray(n, dtype=float)
    return lam * n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))


@dataclass
class USLFit:
    """Fitted USL parameters with 1-sigma standard errors (NaN when unknown)."""

    lam: float
    sigma: float
    kappa: float
    lam_err: float = math.nan
    sigma_err: float = math.nan
    kappa_err: float = math.nan
    n_points: int = 0  # distinct N measured
    n_samples: int = 0  # (N, X) samples fitted (repeats included)
    n_max_measured: float = math.nan
    r2: float = math.nan
    ok: bool = True
    warnings: list[str] = field(default_factory=list)
    cov: np.ndarray | None = None

    def predict(self, n):
        return usl(n, self.lam, self.sigma, self.kappa)

    def predict_reported(self, n):
        """The curve the report's table states: a sigma or kappa it shows as 0 is 0 here.

        Drawing the raw optimum would draw a peak (or ceiling) the table says
        the data cannot support.
        """
        sigma = self.sigma if self.sigma_resolved else 0.0
        kappa = self.kappa if self.kappa_resolved else 0.0
        return usl(n, self.lam, sigma, kappa)

    def _resolved(self, value: float, err: float, floor: float) -> bool:
        """A parameter is told apart from 0 when above ``floor`` and RESOLVE_SIGMAS errors.

        An unknown error (an exact fit: as many points as parameters) says
        nothing about the value, so it never counts as resolved; nor does a
        fit through no more distinct counts than parameters, whose finite
        errors come from the repeats' scatter alone.
        """
        if value <= floor or self.n_points <= N_PARAMS:
            return False
        return math.isfinite(err) and value > RESOLVE_SIGMAS * err

    @property
    def lambda_resolved(self) -> bool:
        """lambda is pinned down well enough to be the single-process rate efficiency is measured against."""
        return (
            self.ok
            and self.n_points > N_PARAMS
            and math.isfinite(self.lam_err)
            and self.lam > 0
            and self.lam_err <= LAMBDA_MAX_REL_ERR * self.lam
        )

    @property
    def kappa_resolved(self) -> bool:
        return self._resolved(self.kappa, self.kappa_err, KAPPA_ZERO)

    @property
    def sigma_resolved(self) -> bool:
        return self._resolved(self.sigma, self.sigma_err, SIGMA_ZERO)

    @property
    def peak_n(self) -> float:
        """N* = sqrt((1 - sigma) / kappa); inf when kappa cannot be told from 0 (no peak seen)."""
        if not self.ok:
            return math.nan
        if not self.kappa_resolved:
            return math.inf
        return math.sqrt(max(0.0, 1.0 - self.sigma) / self.kappa)

    @property
    def peak_n_err(self) -> float:
        """Standard error of N* by the delta method from the (sigma, kappa) covariance."""
        n_star = self.peak_n
        if not math.isfinite(n_star) or self.cov is None or n_star <= 0:
            return math.nan
        s, k = self.sigma, self.kappa
        # dN*/dsigma and dN*/dkappa of sqrt((1 - s) / k)
        d_s = -0.5 / math.sqrt(max(1e-300, (1.0 - s) * k))
        d_k = -0.5 * math.sqrt(max(0.0, 1.0 - s)) * k**-1.5
        grad = np.array([d_s, d_k])
        sub = self.cov[1:3, 1:3]
        if not np.all(np.isfinite(sub)):
            return math.nan
        var = float(grad @ sub @ grad)
        return math.sqrt(var) if var >= 0 else math.nan

    @property
    def ceiling(self) -> float:
        """Most throughput the model allows: X(N*) if it peaks, lambda/sigma as N->inf otherwise.

        inf for a perfectly linear fit (sigma = kappa = 0).
        """
        if not self.ok:
            return math.nan
        n_star = self.peak_n
        if math.isfinite(n_star):
            return float(self.predict(max(1.0, n_star)))
        if self.sigma_resolved:
            return self.lam / self.sigma
        return math.inf

    def as_dict(self) -> dict:
        return {
            "lambda": self.lam,
            "lambda_err": self.lam_err,
            "sigma": self.sigma,
            "sigma_err": self.sigma_err,
            "kappa": self.kappa,
            "kappa_err": self.kappa_err,
            "peak_n": self.peak_n,
            "peak_n_err": self.peak_n_err,
            "ceiling": self.ceiling,
            "r2": self.r2,
            "n_points": self.n_points,
            "n_samples": self.n_samples,
            "ok": self.ok,
            "warnings": "; ".join(self.warnings),
        }


def fit_usl(n, x) -> USLFit:
    """Fit the USL to samples ``(n[i], x[i])`` (repeats as separate samples).

    Throughput is scaled to order 1 before fitting so that lambda (events/s,
    1e3..1e7) and kappa (1e-5..1e-1) do not differ by ten orders of magnitude
    inside the optimiser; lambda and its error are scaled back afterwards.
    Never raises on bad data: returns ``ok=False`` with a warning instead.
    """
    n = np.asarray(n, dtype=float)
    x = np.asarray(x, dtype=float)
    keep = np.isfinite(n) & np.isfinite(x) & (n > 0) & (x > 0)
    n, x = n[keep], x[keep]
    distinct = int(np.unique(n).size)
    notes: list[str] = []
    if distinct < MIN_POINTS:
        notes.append(
            f"only {distinct} process count(s) measured (< {MIN_POINTS}): "
            "the three USL parameters are not well determined"
        )
    if distinct < 2:
        return USLFit(
            math.nan,
            math.nan,
            math.nan,
            n_points=distinct,
            n_samples=int(n.size),
            n_max_measured=float(n.max()) if n.size else math.nan,
            ok=False,
            warnings=notes + ["cannot fit a scaling law to fewer than 2 process counts"],
        )
    scale = float(np.median(x))
    y = x / scale
    # Starting point: lambda from the smallest N measured, mild contention.
    n0 = n.min()
    lam0 = float(np.median(y[n == n0]) / n0)
    best = None
    last_error = ""
    for p0 in ([lam0, 0.02, 1e-4], [lam0, 0.2, 1e-2], [lam0, 1e-6, 1e-9]):
        try:
            with warnings.catch_warnings():
                # OptimizeWarning: covariance not estimable with exact fits;
                # handled below by reporting NaN errors.
                warnings.simplefilter("ignore")
                popt, pcov = curve_fit(
                    usl,
                    n,
                    y,
                    p0=p0,
                    # Noise grows with throughput: weight by relative error,
                    # so the high-N points do not swamp the low-N ones.
                    sigma=y,
                    bounds=(
                        [0.0, SIGMA_BOUNDS[0], KAPPA_BOUNDS[0]],
                        [np.inf, SIGMA_BOUNDS[1], KAPPA_BOUNDS[1]],
                    ),
                    method="trf",
                    x_scale="jac",
                    max_nfev=5000,
                    # Tight tolerances: the default stops a hair short of a
                    # bound, and kappa = 1e-7 instead of 0 prints as a bogus N*.
                    ftol=1e-12,
                    xtol=1e-12,
                    gtol=1e-12,
                )
        except (RuntimeError, ValueError) as exc:
            last_error = str(exc)
            continue
        sse = float(np.sum(((usl(n, *popt) - y) / y) ** 2))
        if best is None or sse < best[2] - 1e-15:
            best = (popt, pcov, sse)
    if best is None:
        return USLFit(
            math.nan,
            math.nan,
            math.nan,
            n_points=distinct,
            n_samples=int(n.size),
            n_max_measured=float(n.max()),
            ok=False,
            warnings=notes + [f"fit did not converge ({last_error})"],
        )
    popt, pcov, sse = best
    sst = float(np.sum((y - y.mean()) ** 2))
    sse_abs = float(np.sum((usl(n, *popt) - y) ** 2))
    r2 = 1.0 - sse_abs / sst if sst > 0 else math.nan
    cov = np.array(pcov, dtype=float)
    cov[0, :] *= scale
    cov[:, 0] *= scale
    errs = (
        np.sqrt(np.clip(np.diag(cov), 0, None))
        if np.all(np.isfinite(np.diag(cov)))
        else [math.nan] * 3
    )
    lam, sigma, kappa = float(popt[0]) * scale, float(popt[1]), float(popt[2])
    fit = USLFit(
        lam,
        sigma,
        kappa,
        lam_err=float(errs[0]),
        sigma_err=float(errs[1]),
        kappa_err=float(errs[2]),
        n_points=distinct,
        n_samples=int(n.size),
        n_max_measured=float(n.max()),
        r2=r2,
        ok=True,
        warnings=notes,
        cov=cov,
    )
    if not np.all(np.isfinite(np.diag(cov))):
        fit.warnings.append("parameter uncertainty not estimable (as many parameters as points)")
    n_star = fit.peak_n
    if math.isfinite(n_star) and n_star > 2 * fit.n_max_measured:
        fit.warnings.append(
            f"N* = {n_star:.1f} lies far beyond the largest N measured ({fit.n_max_measured:g}): "
            "an extrapolation"
        )
    return fit

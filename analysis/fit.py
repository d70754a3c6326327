"""The study's speedup estimate: fit AdamW's loss against data budget, then invert it.

Per model scale, AdamW's end-of-budget loss is fitted as L(D) = alpha * D^(-B) + beta (Wen et al.
2025, arXiv 2509.02046, section on speedup; the authors' experiments/optimizer_sweep/Analysis/
speedup_estimation.py fits it with an unbounded curve_fit). Another optimizer reaching loss L at
budget D is worth D_eff = ((L - beta) / alpha)^(-1/B) AdamW tokens; its speedup is D_eff / D.

D is measured in Chinchilla multiples (the ratio; D in tokens is ratio * 20 * N). The speedup does
not depend on the unit: a change of unit only rescales alpha.

The fit is bounded (alpha > 0, 0 < B <= B_MAX, beta >= 0). It starts from a profile search: for a
fixed B the model is linear in (alpha, beta), so the best (alpha, beta) has a closed form and one
scan over B finds a good start; scipy's curve_fit then polishes it. The same profile solver,
vectorised, refits thousands of bootstrap replicates at once (analysis/bootstrap.py).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

B_MAX = 5.0  # loss-vs-data exponents in practice are well below 1; the cap keeps B off flat ridges
_B_GRID = np.geomspace(1e-3, B_MAX, 160)
_GOLDEN_STEPS = 24  # shrinks the bracket (two grid cells, 0.1 in log B) to about 1e-6
_INVPHI = (np.sqrt(5.0) - 1.0) / 2.0


class FitError(ValueError):
    """The scaling law could not be fitted; the message says why in words."""


def power_law(d: np.ndarray, alpha: float, b: float, beta: float) -> np.ndarray:
    """L(D) = alpha * D^(-B) + beta."""
    return alpha * np.power(d, -b) + beta


def effective_budget(loss, alpha, b, beta) -> np.ndarray:
    """AdamW-equivalent budget D_eff = ((L - beta) / alpha)^(-1/B); inf where L <= beta.

    All arguments broadcast. A loss at or below the asymptote beta is one AdamW would never reach,
    so its effective budget (and speedup) is unbounded.
    """
    loss, alpha, b, beta = np.broadcast_arrays(*(np.asarray(x, dtype=float)
                                                 for x in (loss, alpha, b, beta)))
    out = np.full(loss.shape, np.nan)
    reachable = loss > beta
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out[reachable] = np.power((loss[reachable] - beta[reachable]) / alpha[reachable],
                                  -1.0 / b[reachable])
    out[(loss <= beta)] = np.inf
    return out if out.ndim else out[()]


@dataclass(frozen=True)
class PowerLawFit:
    """A fitted L(D) = alpha * D^(-B) + beta with the points it was fitted on and its quality."""

    alpha: float
    b: float
    beta: float
    ratios: tuple[float, ...]
    losses: tuple[float, ...]

    def predict(self, d) -> np.ndarray:
        return power_law(np.asarray(d, dtype=float), self.alpha, self.b, self.beta)

    def effective_budget(self, loss) -> np.ndarray:
        return effective_budget(loss, self.alpha, self.b, self.beta)

    def speedup(self, loss, d) -> np.ndarray:
        """D_eff / D for a cell that reached `loss` at budget `d`."""
        return self.effective_budget(loss) / np.asarray(d, dtype=float)

    @property
    def residuals(self) -> np.ndarray:
        return np.asarray(self.losses) - self.predict(self.ratios)

    @property
    def rss(self) -> float:
        return float(np.sum(self.residuals ** 2))

    @property
    def dof(self) -> int:
        return len(self.ratios) - 3

    @property
    def residual_sd(self) -> float:
        """sqrt(RSS / (n - 3)): the noise level the fit leaves; NaN with no spare points."""
        return float(np.sqrt(self.rss / self.dof)) if self.dof > 0 else float("nan")

    @property
    def rmse(self) -> float:
        return float(np.sqrt(self.rss / len(self.ratios)))

    @property
    def r2(self) -> float:
        y = np.asarray(self.losses)
        tss = float(np.sum((y - y.mean()) ** 2))
        return 1.0 - self.rss / tss if tss > 0 else float("nan")

    @property
    def at_bound(self) -> str:
        """Which bound the fit rests on ("" if none): a sign the data barely pin the law down."""
        hits = []
        if self.b >= B_MAX * (1 - 1e-6):
            hits.append(f"B at its cap {B_MAX:g}")
        if self.beta <= 1e-12:
            hits.append("beta at 0")
        return ", ".join(hits)

    @property
    def loss_range(self) -> tuple[float, float]:
        return float(min(self.losses)), float(max(self.losses))


def fit_power_law(ratios, losses) -> PowerLawFit:
    """Fit L(D) = alpha * D^(-B) + beta to AdamW's losses at data budgets `ratios`.

    Raises FitError (with the reason in words) for too few points, non-finite values, or data
    that do not fall with the budget.
    """
    d, y = _check_points(ratios, losses)
    start = profile_fit(d, y[None, :])
    if not np.all(np.isfinite(start)):
        raise FitError("the losses do not decrease with the data budget, so no alpha > 0 fits "
                       f"(budgets {_fmt(d)}, losses {_fmt(y)})")
    best = start[0]
    polished = _polish(d, y, best)
    if polished is not None and _rss(d, y, polished) <= _rss(d, y, best):
        best = polished
    alpha, b, beta = (float(v) for v in best)
    return PowerLawFit(alpha, b, beta, tuple(float(v) for v in d), tuple(float(v) for v in y))


def profile_fit(d: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bounded least squares for every row of `ys` at once: returns (m, 3) [alpha, B, beta].

    A scan over a log grid of B, then golden-section refinement of log B inside the best grid
    cell. Rows with no admissible fit (the losses do not fall with D) come back as NaN.
    """
    ys = np.atleast_2d(np.asarray(ys, dtype=float))
    rss = _grid_rss(d, ys)  # (m, grid)
    best = np.argmin(rss, axis=1)
    ok = np.isfinite(rss[np.arange(len(ys)), best])
    lo = np.log(_B_GRID[np.maximum(best - 1, 0)])
    hi = np.log(_B_GRID[np.minimum(best + 1, len(_B_GRID) - 1)])
    b = np.exp(_golden_min(lambda log_b: _row_rss(d, ys, np.exp(log_b)), lo, hi))
    alpha, beta = _linear_part(d, ys, b)
    out = np.column_stack([alpha, b, beta])
    out[~ok] = np.nan
    return out


def _grid_rss(d, ys):
    """(m, grid) RSS of the best admissible (alpha, beta) at each grid B, by matrix products."""
    x = np.power(d[None, :], -_B_GRID[:, None])  # (grid, n)
    xc = x - x.mean(axis=1, keepdims=True)
    yc = ys - ys.mean(axis=1, keepdims=True)
    sxx = np.sum(xc ** 2, axis=1)
    sxy = yc @ xc.T
    alpha = sxy / sxx
    beta = ys.mean(axis=1)[:, None] - alpha * x.mean(axis=1)[None, :]
    rss_free = np.sum(yc ** 2, axis=1)[:, None] - sxy ** 2 / sxx
    sx2, sxy0 = np.sum(x ** 2, axis=1), ys @ x.T  # the fit through beta = 0
    rss_zero = np.sum(ys ** 2, axis=1)[:, None] - sxy0 ** 2 / sx2
    clipped = beta < 0
    slope = np.where(clipped, sxy0 / sx2, alpha)
    return np.where(slope > 0, np.where(clipped, rss_zero, rss_free), np.inf)


def _row_rss(d, ys, b):
    """RSS of the best admissible (alpha, beta) for row i of `ys` at B = b[i]; inf if alpha <= 0."""
    alpha, beta = _linear_part(d, ys, b)
    pred = alpha[:, None] * np.power(d[None, :], -b[:, None]) + beta[:, None]
    rss = np.sum((ys - pred) ** 2, axis=1)
    return np.where(alpha > 0, rss, np.inf)


def _linear_part(d, ys, b):
    """For B = b[i], the least-squares (alpha, beta) of row i with beta >= 0 (closed form)."""
    x = np.power(d[None, :], -b[:, None])  # (m, n)
    xm, ym = x.mean(axis=1), ys.mean(axis=1)
    sxx = np.sum((x - xm[:, None]) ** 2, axis=1)
    sxy = np.sum((x - xm[:, None]) * (ys - ym[:, None]), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(sxx > 0, sxy / sxx, np.nan)
        beta = ym - alpha * xm
        # a negative beta puts the constrained optimum on beta = 0: a fit through the origin
        alpha_zero = np.sum(x * ys, axis=1) / np.sum(x * x, axis=1)
    clipped = beta < 0
    return np.where(clipped, alpha_zero, alpha), np.where(clipped, 0.0, beta)


def _golden_min(f, lo, hi):
    """Vectorised golden-section search: the minimiser of f in [lo, hi] for each entry."""
    a, c = lo.copy(), hi.copy()
    x1, x2 = c - _INVPHI * (c - a), a + _INVPHI * (c - a)
    f1, f2 = f(x1), f(x2)
    for _ in range(_GOLDEN_STEPS):
        left = f1 <= f2  # the minimum lies in [a, x2]: x1 becomes the new x2
        c = np.where(left, x2, c)
        a = np.where(left, a, x1)
        new = np.where(left, c - _INVPHI * (c - a), a + _INVPHI * (c - a))
        f_new = f(new)
        x1, x2, f1, f2 = (np.where(left, new, x2), np.where(left, x1, new),
                          np.where(left, f_new, f2), np.where(left, f1, f_new))
    return (a + c) / 2


def _polish(d, y, start):
    """curve_fit from the profile start; None if it fails (the start is then kept)."""
    lower = [1e-12, 1e-6, 0.0]
    upper = [np.inf, B_MAX, np.inf]
    p0 = np.clip(start, lower, [1e12, B_MAX, np.inf])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, _ = curve_fit(power_law, d, y, p0=p0, bounds=(lower, upper), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    return popt if np.all(np.isfinite(popt)) else None


def _rss(d, y, p) -> float:
    return float(np.sum((y - power_law(d, *p)) ** 2))


def _check_points(ratios, losses):
    d = np.asarray(ratios, dtype=float).ravel()
    y = np.asarray(losses, dtype=float).ravel()
    if d.shape != y.shape:
        raise FitError(f"{d.size} budgets but {y.size} losses")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(y))):
        raise FitError(f"non-finite budget or loss (budgets {_fmt(d)}, losses {_fmt(y)})")
    if np.any(d <= 0):
        raise FitError(f"data budgets must be positive (got {_fmt(d)})")
    if np.unique(d).size < 3:
        raise FitError(f"need losses at 3 or more data budgets to fit alpha, B and beta "
                       f"(got {np.unique(d).size}: {_fmt(np.unique(d))})")
    order = np.argsort(d)
    return d[order], y[order]


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.asarray(values).ravel()) + "]"

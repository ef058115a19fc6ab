"""Paired comparison of an arm with random: two-level bootstrap, Welch interval, verdict (docs/evaluation.md).

Data: ``L[a]`` is an (S_a, n) array of per-example losses of arm a (one row per seed). The paired
estimate is Delta = mean_i(mean_s L[a][s, i] - mean_s L[r][s, i]); negative = lower loss than
random. Its CI is the wider of (1) a two-level percentile bootstrap that resamples each arm's seeds
and the examples (the same example draw for both arms) and (2) a Welch t interval on per-seed
means. "Beats random" requires the CI to exclude 0 below on every verdict set (an intersection-union
test); p-values (bootstrap, max over sets) are Holm-adjusted across arms.

The same machinery serves per-example accuracies (0/1 scores of generation sets), where higher
is better: Delta is still arm minus reference, and ``higher_is_better`` flips which side of 0
counts as "better" in the win rate and the verdict.
"""
from __future__ import annotations

import numpy as np


def paired_delta(La: np.ndarray, Lr: np.ndarray, *, n_boot: int = 10_000, seed: int = 0, alpha: float = 0.05,
                 higher_is_better: bool = False) -> dict:
    """Delta of arm vs reference with CIs.

    Args:
        La: (S_a, n) per-seed per-example losses of the arm (NaN examples are dropped from both).
        Lr: (S_r, n) the same for the reference arm.
        n_boot: bootstrap draws (default 10,000).
        seed: bootstrap RNG seed.
        alpha: 1 - confidence (default 0.05).
        higher_is_better: False for losses (default), True for accuracies; only ``win_rate``
            depends on it.

    Returns:
        dict with ``delta``, ``ci_boot``, ``ci_welch`` (None with < 2 seeds in an arm), ``ci``
        (the wider), ``p_boot`` (two-sided), ``seed_sd_arm``, ``seed_sd_ref``, ``se``, ``mde``
        (3.3 x SE: 5% two-sided test at 90% power), ``p`` (the larger of the bootstrap and Welch two-sided p), ``n_examples``, ``n_seeds``, ``win_rate`` (share of
        examples where the arm's seed mean is strictly better: lower loss, or higher accuracy).
    """
    from scipy import stats

    La, Lr = np.atleast_2d(La).astype(np.float64), np.atleast_2d(Lr).astype(np.float64)
    ok = ~(np.isnan(La).any(0) | np.isnan(Lr).any(0))
    La, Lr = La[:, ok], Lr[:, ok]
    Sa, n = La.shape
    Sr = Lr.shape[0]
    if n == 0:
        return {"delta": float("nan"), "ci": [float("nan")] * 2, "n_examples": 0, "n_seeds": [Sa, Sr]}
    d = La.mean(0) - Lr.mean(0)
    delta = float(d.mean())
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_boot)
    chunk = max(1, 2_000_000 // max(n, 1))
    for lo in range(0, n_boot, chunk):
        B = min(chunk, n_boot - lo)
        sa = rng.integers(0, Sa, size=(B, Sa))
        sr = rng.integers(0, Sr, size=(B, Sr))
        ma = La[sa].mean(1)  # (B, n)
        mr = Lr[sr].mean(1)
        ex = rng.integers(0, n, size=(B, n))  # the same example draw for both arms
        deltas[lo:lo + B] = np.take_along_axis(ma - mr, ex, axis=1).mean(1)
    ci_boot = [float(np.quantile(deltas, alpha / 2)), float(np.quantile(deltas, 1 - alpha / 2))]
    p_boot = float(min(1.0, 2 * min((deltas >= 0).mean(), (deltas <= 0).mean())))
    pa_, pr_ = La.mean(1), Lr.mean(1)
    sd_a = float(pa_.std(ddof=1)) if Sa > 1 else float("nan")
    sd_r = float(pr_.std(ddof=1)) if Sr > 1 else float("nan")
    ci_welch, se, mde, p_welch = None, float("nan"), float("nan"), None
    if Sa > 1 and Sr > 1:
        va, vr = sd_a ** 2 / Sa, sd_r ** 2 / Sr
        se = float(np.sqrt(va + vr))
        if se > 0:
            df = (va + vr) ** 2 / (va ** 2 / (Sa - 1) + vr ** 2 / (Sr - 1))
            t = stats.t.ppf(1 - alpha / 2, df)
            ci_welch = [float(delta - t * se), float(delta + t * se)]
            mde = float((t + stats.t.ppf(0.8, df)) * se)
            p_welch = float(2 * stats.t.sf(abs(delta) / se, df))
        else:
            ci_welch = [delta, delta]
            p_welch = 0.0 if delta else 1.0
    ci = ci_boot if ci_welch is None else [float(min(ci_boot[0], ci_welch[0])), float(max(ci_boot[1], ci_welch[1]))]
    p = p_boot if p_welch is None else max(p_boot, p_welch)  # matches the wider-CI rule
    return {"delta": delta, "ci": ci, "ci_boot": ci_boot, "ci_welch": ci_welch, "p_boot": p_boot, "p_welch": p_welch, "p": p,
            "seed_sd_arm": sd_a, "seed_sd_ref": sd_r, "se": se, "mde": mde, "n_examples": int(n),
            "n_seeds": [Sa, Sr], "win_rate": float((d > 0).mean() if higher_is_better else (d < 0).mean())}


def holm(pvals: dict[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values."""
    keys = sorted(pvals, key=lambda k: pvals[k])
    m = len(keys)
    out, running = {}, 0.0
    for i, k in enumerate(keys):
        running = max(running, min(1.0, (m - i) * pvals[k]))
        out[k] = running
    return out


def verdict(per_set: dict[str, dict], verdict_sets: list[str], higher_is_better: bool = False,
            reference: str = "random") -> str:
    """``beats <reference>`` / ``worse than <reference>`` / ``style-dependent`` / ``no detectable difference``,
    or ``better on <sets> only`` / ``worse on <sets> only`` when some sets differ one way and the rest not detectably.

    Args:
        per_set: {set name: :func:`paired_delta` result} for one arm and one metric.
        verdict_sets: the sets that must all agree (the reference styles).
        higher_is_better: False (default) for losses: "beats" needs the CI below 0 on every set;
            True for accuracies: "beats" needs it above 0.
        reference: the arm the differences are taken against (``random``, or e.g. ``length_matched``).
    """
    if not verdict_sets:  # e.g. no verdict set carries this metric; all([]) would read as "beats"
        return "not evaluated"
    sig = []
    for s in verdict_sets:
        r = per_set.get(s)
        if r is None or r.get("n_examples", 0) == 0:
            return "not evaluated"
        lo, hi = r["ci"]
        if higher_is_better:  # mirror the interval so that -1 always means "better than the reference"
            lo, hi = -hi, -lo
        sig.append(-1 if hi < 0 else (1 if lo > 0 else 0))
    if all(v == -1 for v in sig):
        return f"beats {reference}"
    if all(v == 1 for v in sig):
        return f"worse than {reference}"
    if -1 in sig and 1 in sig:
        return "style-dependent"
    if all(v == 0 for v in sig):
        return "no detectable difference"
    # one-sided on some sets only: naming them keeps a real loss (or gain) on one style from
    # reading as "no difference"
    side = -1 if -1 in sig else 1
    named = ", ".join(s for s, v in zip(verdict_sets, sig) if v == side)
    return f"{'better' if side == -1 else 'worse'} on {named} only"

"""S-curves of the LSH band choices for minhash_dedup (no data needed).

Writes runs/bench/minhash_scurve/minhash_scurve.md (P(candidate) at chosen Jaccard values) and
minhash_scurve.png (the curves; ``--record``: both in benchmarks/results/) for the default recall-leaning weights (0.1/0.9) and the
equal weights datasketch uses by default (0.5/0.5), at num_perm 128 and 256.

Usage: python benchmarks/minhash_scurve.py [--record]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_record_flag, output_dir

from curate.dedup.minhash_core import candidate_probability, optimal_param


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_record_flag(ap)
    out_dir = output_dir(ap.parse_args())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s_marks = [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    lines = ["| t | P | weights (fp/fn) | b x r | midpoint (1/b)^(1/r) | " + " | ".join(f"J={s}" for s in s_marks) + " |",
             "|---|---|---|---|---|" + "---|" * len(s_marks)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    s = np.linspace(0, 1, 401)
    for ax, t in zip(axes, (0.7, 0.8, 0.9)):
        for P in (128, 256):
            for w in (0.1, 0.5):
                b, r = optimal_param(t, P, w, 1 - w)
                mid = (1 / b) ** (1 / r)
                lines.append(f"| {t} | {P} | {w}/{1 - w:.1f} | {b} x {r} | {mid:.3f} | "
                             + " | ".join(f"{candidate_probability(x, b, r):.3f}" for x in s_marks) + " |")
                ax.plot(s, candidate_probability(s, b, r), label=f"P={P} w={w}/{1 - w:.1f}: {b}x{r}",
                        ls="-" if w == 0.1 else "--")
        ax.axvline(t, color="k", lw=0.8)
        ax.set_title(f"threshold {t}")
        ax.set_xlabel("Jaccard similarity")
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("P(candidate) = 1-(1-s^r)^b")
    fig.tight_layout()
    fig.savefig(out_dir / "minhash_scurve.png", dpi=110)
    (out_dir / "minhash_scurve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""SAE-based diversity selection: ``sae_features`` annotator, ``sae_greedy`` and ``sae_simscale``.

**A reconstruction.** Yang et al. 2025 ("Diversity as a Reward"-style SAE selection, Meta,
arXiv 2502.14050) name two methods, SAE-GreedSelect and SAE-SimScale, over the features a TopK
sparse autoencoder finds active in each example. No public code and no readable full text exist
(docs/methods/sae.md), so every choice not confirmed by the abstract and summaries is a
parameter here, and the defaults are ours:

* SAE: ours is trained on the pool's per-example embeddings (MiniLM 384-d by default) on a CPU,
  not the paper's Llama-3.1-8B-Instruct residual stream with 131k latents; see
  :mod:`curate.select.sae_model`. Because one vector per example goes in, there is no token
  pooling: an example's features F(x) are the SAE latents of its vector with activation
  > ``act_threshold`` (the paper's per-token union is not reproduced).
* SAE-GreedSelect (``sae_greedy``): greedy maximum coverage, each step takes the row adding the
  most not-yet-covered features, with lazy greedy (upper bounds in a heap). When every remaining
  row adds nothing (coverage saturated, which the paper avoids by using it for small budgets),
  ``saturation="restart"`` clears the covered set and starts a new coverage pass (``round``);
  ``"random"`` fills the rest at random. Pick order is nested.
* SAE-SimScale (``sae_simscale``): visit rows in ``order`` (feature count desc by default),
  accept a row if its max similarity to the rows accepted so far is <= τ (``similarity``: Jaccard
  over feature sets by default, or cosine over the sparse activation vectors); τ runs over the
  schedule tau_start, tau_start + tau_step, ..., 1 and the smallest τ whose pass fills the budget
  is used (found by bisection over the schedule). Not nested (τ depends on the budget).

:func:`feature_coverage_vs_random` reports how many of the pool's features a selection covers
against random subsets of the same size (for reports and benchmarks).
"""
from __future__ import annotations

import heapq
import json
import logging

import numpy as np
import pyarrow as pa

from curate.core.params import check_real
from curate.core.registry import register
from curate.core.schema import embedding_column, embedding_matrix
from curate.core.stage import Annotator, StageContext
from curate.select.base import BudgetSelector, Picks
from curate.select.sae_model import TopKSAE

log = logging.getLogger(__name__)

LATENTS, ACTS = "sae_latents", "sae_acts"
SAE_PARAMS = ("embedding_column", "width", "expansion", "k", "epochs", "seed")


@register
class SAEFeatures(Annotator):
    """Train a TopK SAE on an embedding column and store each row's k active latents.

    The SAE is saved as this stage's artifact (``sae.npz`` + ``sae.json``, read back with
    ``TopKSAE.load(store.artifacts(key))``); the stage's cache key chains from the input's content
    and these parameters, so the same pool and settings reuse it (and its features) everywhere.

    Args:
        embedding_column: input vectors (default ``"embedding"``; an ``embed`` stage is added
            when missing).
        width, expansion, k, epochs, batch_size, lr, seed: TopK SAE settings (defaults None, 8,
            32, 30, 256, 1e-3, 0), see :class:`~curate.select.sae_model.TopKSAE`.
        show_progress: progress bar over epochs (default True; execution-only).

    Output columns: ``sae_latents`` (k int32 latent ids per row, by activation desc) and
    ``sae_acts`` (their k float32 activations). Learned: ``sae_`` (the TopKSAE).
    """

    name = "sae_features"
    execution_params = ("show_progress",)  # batch_size changes the trained SAE: part of the cache key

    def __init__(self, *, embedding_column: str = "embedding", width: int | None = None, expansion: int = 8,
                 k: int = 32, epochs: int = 30, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                 show_progress: bool = True):
        TopKSAE(width=width, expansion=expansion, k=k, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
        self.embedding_column, self.width, self.expansion, self.k = embedding_column, width, expansion, k
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed
        self.show_progress = show_progress

    def output_columns(self) -> list[str]:
        return [LATENTS, ACTS]

    def required_columns(self) -> list[str]:
        return [self.embedding_column]

    def prerequisites(self, columns: list[str]) -> list:
        from curate.embed.stage import Embed

        return [] if self.embedding_column in columns else [Embed(column=self.embedding_column)]

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        x = embedding_matrix(table, self.embedding_column)
        self.sae_ = TopKSAE(width=self.width, expansion=self.expansion, k=self.k, epochs=self.epochs,
                            batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                            show_progress=self.show_progress and ctx is not None and ctx.show_progress).fit(x)
        if ctx is not None and ctx.artifact_dir is not None:
            self.sae_.save(ctx.artifact_dir)
        lat, act = self.sae_.encode(x)
        return pa.table({LATENTS: embedding_column(lat), ACTS: embedding_column(act)})


def feature_sets(table: pa.Table, act_threshold: float = 0.0) -> list[np.ndarray]:
    """F(x) per row: the ids of the latents with activation > ``act_threshold`` (sorted int32 arrays)."""
    lat = embedding_matrix(table, LATENTS, dtype=np.int32)
    act = embedding_matrix(table, ACTS)
    on = act > act_threshold
    return [np.sort(lat[i][on[i]]) for i in range(len(lat))]


def feature_coverage(feats: list[np.ndarray], keep: np.ndarray) -> float:
    """Fraction of the pool's distinct features that the rows in ``keep`` (bool (n,)) cover."""
    pool = np.unique(np.concatenate(feats)) if feats else np.zeros(0)
    idx = np.flatnonzero(keep)
    got = np.unique(np.concatenate([feats[i] for i in idx])) if len(idx) else np.zeros(0)
    return len(got) / max(len(pool), 1)


def feature_coverage_vs_random(table: pa.Table, keep: np.ndarray, *, act_threshold: float = 0.0, n_random: int = 20,
                               seed: int = 0) -> dict:
    """SAE feature coverage of a selection vs random subsets of the same size (same table).

    Args:
        table: rows with ``sae_latents``/``sae_acts`` (the ``sae_features`` stage's columns).
        keep: (n,) bool, the selection.
        act_threshold: activation threshold defining features (default 0.0).
        n_random: random subsets drawn (default 20).
        seed: RNG seed for the random subsets (default 0).

    Returns:
        ``{"n_selected", "pool_features", "selected", "random_mean", "random_std", "random_max"}``
        (coverages as fractions of the pool's distinct features).
    """
    feats = feature_sets(table, act_threshold)
    keep = np.asarray(keep, dtype=bool)
    m, n = int(keep.sum()), len(keep)
    rng = np.random.default_rng(seed)
    rand = []
    for _ in range(n_random):
        mask = np.zeros(n, bool)
        mask[rng.choice(n, m, replace=False)] = True
        rand.append(feature_coverage(feats, mask))
    return {"n_selected": m, "pool_features": int(len(np.unique(np.concatenate(feats)))) if feats else 0,
            "selected": round(feature_coverage(feats, keep), 4), "random_mean": round(float(np.mean(rand)), 4),
            "random_std": round(float(np.std(rand)), 4), "random_max": round(float(np.max(rand)), 4)}


def greedy_coverage(feats: list[np.ndarray], k: int, n_latents: int, tie: np.ndarray,
                    saturation: str = "restart") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lazy-greedy max coverage: ``(order, gain, round)`` for the first ``k`` picks.

    Args:
        feats: per-row feature id arrays.
        k: picks wanted (<= n).
        n_latents: feature id bound.
        tie: (n,) distinct ints; among equal gains the lower wins (a seeded permutation).
        saturation: ``"restart"`` (new coverage pass when nothing adds features) or ``"random"``.
    """
    n = len(feats)
    size = np.array([len(f) for f in feats])
    covered = np.zeros(n_latents, bool)
    taken = np.zeros(n, bool)
    order, gains, rounds = [], [], []
    heap = [(-int(size[i]), int(tie[i]), i) for i in range(n)]
    heapq.heapify(heap)
    rnd = 0
    while len(order) < k and heap:
        neg, t, i = heapq.heappop(heap)
        gain = int((~covered[feats[i]]).sum())
        if heap and (-gain, t) > heap[0][:2]:  # stale upper bound: re-queue with the true gain
            heapq.heappush(heap, (-gain, t, i))
            continue
        if gain == 0:  # coverage saturated: nothing left adds a feature
            heapq.heappush(heap, (0, t, i))
            rest = np.array([e[2] for e in heap])
            if saturation == "restart" and covered.any() and size[rest].max() > 0:
                covered[:] = False
                rnd += 1
                heap = [(-int(size[j]), int(tie[j]), int(j)) for j in rest]
                heapq.heapify(heap)
                continue
            rest = rest[np.argsort(tie[rest])][:k - len(order)]  # "random": seeded order
            order += rest.tolist()
            gains += [0] * len(rest)
            rounds += [rnd] * len(rest)
            break
        covered[feats[i]] = True
        taken[i] = True
        order.append(i)
        gains.append(gain)
        rounds.append(rnd)
    return np.array(order, np.int64), np.array(gains, np.float64), np.array(rounds, np.int64)


class _SAESelector(BudgetSelector):
    """Shared parameters: the SAE (``sae_features`` is added when its columns are missing)."""

    def _init_sae(self, budget, seed, act_threshold, embedding_column, width, expansion, k, epochs):
        self._init_budget(budget, seed)
        check_real(act_threshold, "act_threshold")
        self.act_threshold, self.embedding_column = act_threshold, embedding_column
        self.width, self.expansion, self.k, self.epochs = width, expansion, k, epochs
        self._features_stage()  # validates the SAE parameters

    def _features_stage(self) -> SAEFeatures:
        return SAEFeatures(**{p: getattr(self, p) for p in SAE_PARAMS})

    def required_columns(self) -> list[str]:
        return [LATENTS, ACTS] + super().required_columns()

    def method_prerequisites(self, columns: list[str]) -> list:
        if LATENTS in columns and ACTS in columns:
            return []
        stage = self._features_stage()
        return stage.prerequisites(columns) + [stage]


@register
class SAEGreedy(_SAESelector):
    """SAE-GreedSelect (reconstruction; Yang et al. 2025, arXiv 2502.14050): greedy max feature coverage.

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        seed: seeds the SAE training and breaks ties between equal gains (default 0).
        act_threshold: a latent is a feature of a row when its activation > this (default 0.0:
            all k TopK latents that are positive).
        saturation: ``"restart"`` (default) or ``"random"``, see the module docstring.
        embedding_column, width, expansion, k, epochs: the SAE's (see :class:`SAEFeatures`).

    Ledger extras: ``n_features`` (|F(x)|), ``round`` (coverage pass a pick was made in);
    ``sae_greedy_score`` = marginal gain when picked (unpicked rows: the gain they would still
    add). Unselected rows: ``covered_features`` when they add no uncovered feature, else
    ``not_selected_by_budget``.
    """

    name = "sae_greedy"
    reasons = {"covered_features": "every feature of the row is already covered by the selected rows"}

    def __init__(self, *, budget, seed: int = 0, act_threshold: float = 0.0, saturation: str = "restart",
                 embedding_column: str = "embedding", width: int | None = None, expansion: int = 8, k: int = 32,
                 epochs: int = 30):
        if saturation not in ("restart", "random"):
            raise ValueError(f"saturation must be 'restart' or 'random', got {saturation!r}")
        self.saturation = saturation
        self._init_sae(budget, seed, act_threshold, embedding_column, width, expansion, k, epochs)

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        feats = feature_sets(table, self.act_threshold)
        n = len(feats)
        h = int(max((f.max() for f in feats if len(f)), default=0)) + 1
        tie = np.random.default_rng(self.seed).permutation(n)
        order, gain, rnd = greedy_coverage(feats, k, h, tie, self.saturation)
        covered = np.zeros(h, bool)
        last = rnd[-1] if len(rnd) else 0
        for i in order[rnd == last]:
            covered[feats[i]] = True
        score = np.array([float((~covered[f]).sum()) for f in feats])
        score[order] = gain
        rounds = np.full(n, -1, np.int64)
        rounds[order] = rnd
        reasons = np.where(score == 0, "covered_features", None).astype(object)
        log.info("sae_greedy: %d picks over %d coverage pass(es)", len(order), last + 1)
        return Picks(order=order, score=score, reasons=reasons,
                     extras={"n_features": np.array([len(f) for f in feats], np.int64), "round": rounds})


def simscale_pass(x, cand: np.ndarray, tau: float, k: int, similarity: str, block: int = 256) -> tuple[list[int], np.ndarray]:
    """One SimScale pass: accept candidates (in order) whose max similarity to accepted rows <= tau.

    Candidates go in blocks: similarities to rows accepted in earlier blocks come from one sparse
    product per block, those within the block from a (block × block) product, so the pass is not
    a Python loop over accepted rows.

    Args:
        x: (n, h) scipy CSR: binary feature sets (``"jaccard"``) or unit-norm activations (``"cosine"``).
        cand: (n,) candidate order.
        tau: threshold.
        k: stop after k accepted.
        similarity: ``"jaccard"`` or ``"cosine"``.
        block: candidates per block (default 256).

    Returns:
        ``(accepted, max_sim)``: accepted rows (at most k) and (n,) max similarity of each visited
        row to the rows accepted before it (NaN where not visited).
    """
    size = np.diff(x.indptr).astype(np.float64)
    acc: list[int] = []
    max_sim = np.full(x.shape[0], np.nan)

    def sims(a, b, inter):  # dense (len(a), len(b)) similarity from dot products
        if similarity == "cosine":
            return inter
        union = size[a][:, None] + size[b][None, :] - inter
        return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)

    for start in range(0, len(cand), block):
        blk = cand[start:start + block]
        xb = x[blk]
        prev = np.zeros(len(blk))
        if acc:
            inter = (xb @ x[acc].T).tocoo()
            if inter.nnz:
                s = inter.data if similarity == "cosine" else \
                    inter.data / (size[blk][inter.row] + size[np.asarray(acc)][inter.col] - inter.data)
                np.maximum.at(prev, inter.row, s)
        inner = sims(blk, blk, (xb @ xb.T).toarray())
        mine: list[int] = []  # positions in blk accepted in this block
        for j, i in enumerate(blk):
            s = max(prev[j], inner[j, mine].max()) if mine else prev[j]
            max_sim[i] = s
            if s <= tau + 1e-9:
                mine.append(j)
                acc.append(int(i))
                if len(acc) == k:
                    return acc, max_sim
    return acc, max_sim


@register
class SAESimScale(_SAESelector):
    """SAE-SimScale (reconstruction; Yang et al. 2025, arXiv 2502.14050): similarity-threshold filter.

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        seed: seeds the SAE training and breaks ties in the candidate order (default 0).
        act_threshold: feature activation threshold (default 0.0).
        similarity: ``"jaccard"`` over feature sets (default) or ``"cosine"`` over the sparse
            activation vectors.
        order: candidate order, ``"n_features"`` (most features first, default), ``"activation"``
            (largest total activation first) or ``"random"``; ties by a seeded permutation.
        tau_start: first threshold of the schedule (default 0.0).
        tau_step: schedule step (default 0.05); the schedule ends at 1.0, which accepts everything.
        embedding_column, width, expansion, k, epochs: the SAE's (see :class:`SAEFeatures`).

    Ledger extras: ``n_features``, ``feature_sim`` (max similarity to the rows accepted before it,
    NaN if never visited); ``sae_simscale_score`` = the candidate-order key. Unselected rows:
    ``similar_features`` (too similar at the final τ) or ``not_selected_by_budget`` (not
    reached). Learned: ``tau_`` (the threshold used).
    """

    name = "sae_simscale"
    nested = False
    reasons = {"similar_features": "feature similarity to an already selected row above the final threshold"}

    def __init__(self, *, budget, seed: int = 0, act_threshold: float = 0.0, similarity: str = "jaccard",
                 order: str = "n_features", tau_start: float = 0.0, tau_step: float = 0.05,
                 embedding_column: str = "embedding", width: int | None = None, expansion: int = 8, k: int = 32,
                 epochs: int = 30):
        if similarity not in ("jaccard", "cosine"):
            raise ValueError(f"similarity must be 'jaccard' or 'cosine', got {similarity!r}")
        if order not in ("n_features", "activation", "random"):
            raise ValueError(f"order must be 'n_features', 'activation' or 'random', got {order!r}")
        check_real(tau_start, "tau_start", 0.0, 1.0)
        check_real(tau_step, "tau_step", 1e-6, 1.0)
        self.similarity, self.order, self.tau_start, self.tau_step = similarity, order, tau_start, tau_step
        self._init_sae(budget, seed, act_threshold, embedding_column, width, expansion, k, epochs)

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        from scipy import sparse

        lat = embedding_matrix(table, LATENTS, dtype=np.int32)
        act = embedding_matrix(table, ACTS).astype(np.float64)
        on = act > self.act_threshold
        n = len(lat)
        n_feat = on.sum(axis=1)
        w = on.astype(np.float64) if self.similarity == "jaccard" else np.where(on, act, 0.0)
        if self.similarity == "cosine":
            w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
        rows = np.repeat(np.arange(n), lat.shape[1])
        x = sparse.csr_matrix((w.ravel(), (rows, lat.ravel())), shape=(n, int(lat.max(initial=0)) + 1))
        x.eliminate_zeros()
        tie = np.random.default_rng(self.seed).permutation(n)
        key = {"n_features": n_feat.astype(np.float64), "activation": np.where(on, act, 0).sum(axis=1),
               "random": np.zeros(n)}[self.order]
        cand = np.lexsort((tie, -key))
        grid = np.unique(np.append(np.arange(self.tau_start, 1.0, self.tau_step), 1.0))
        lo, hi = 0, len(grid) - 1  # the last grid value (1.0) accepts every row, so it fills the budget
        best = simscale_pass(x, cand, grid[hi], k, self.similarity)
        passes = 1
        while lo < hi:  # smallest grid tau whose pass fills k (bisection: the count grows with tau)
            mid = (lo + hi) // 2
            got = simscale_pass(x, cand, grid[mid], k, self.similarity)
            passes += 1
            if len(got[0]) >= k:
                hi, best = mid, got
            else:
                lo = mid + 1
        acc, max_sim = best
        self.tau_ = float(grid[hi])
        reasons = np.where(~np.isnan(max_sim) & (max_sim > self.tau_ + 1e-9), "similar_features", None).astype(object)
        log.info("sae_simscale: tau=%.3f after %d pass(es), %d rows accepted", self.tau_, passes, len(acc))
        if ctx is not None and ctx.artifact_dir is not None:
            ctx.artifact_dir.mkdir(parents=True, exist_ok=True)
            (ctx.artifact_dir / "sae_simscale.json").write_text(json.dumps({"tau": self.tau_, "passes": passes}))
        return Picks(order=np.array(acc, np.int64), score=key, reasons=reasons,
                     extras={"n_features": n_feat.astype(np.int64), "feature_sim": max_sim})

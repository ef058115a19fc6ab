"""GPU paths (CUDA autocast embeddings, faiss-gpu k-means, bf16 LM scoring) against the CPU.

Marked ``gpu``: deselected by default and skipped where no CUDA device is visible (CI has none).
Run on a GPU machine with ``pytest -m gpu``. Not yet run: no GPU was lent while they were written.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import toy_table

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")]

TEXTS = ["The cat sat on the mat.", "A dog barked at the mailman.", "Stocks fell sharply on Monday.",
         "Photosynthesis turns light into chemical energy.", "The cat is sitting on the mat."] * 8


@pytest.mark.parametrize("backend", ["sentence_transformers", "lm_pooling"])
def test_embed_cuda_autocast_matches_cpu(ctx, backend):
    """The backends that run on torch: the CUDA side really is on the GPU (checked), in autocast."""
    from curate.core.schema import embedding_matrix
    from curate.embed.stage import Embed

    cpu = embedding_matrix(Embed(backend=backend, device="cpu", show_progress=False)
                           .annotate(toy_table(TEXTS), ctx), "embedding")
    ctx.work_dir = ctx.work_dir.parent / f"work_gpu_{backend}"
    torch.cuda.reset_peak_memory_stats()
    gpu = embedding_matrix(Embed(backend=backend, device="cuda", show_progress=False)
                           .annotate(toy_table(TEXTS), ctx), "embedding")
    assert torch.cuda.max_memory_allocated() > 10 * 2 ** 20  # the model ran on the GPU
    assert gpu.shape == cpu.shape
    assert np.min(np.sum(cpu * gpu, axis=1)) > 0.99  # same vectors up to half-precision noise


def test_faiss_gpu_kmeans_trains_and_assigns_like_cpu():
    """Under ``-m gpu`` on a CUDA machine, faiss without GPU support is a failure, not a skip."""
    from curate.cluster.faiss_utils import assign, gpu_available, train_kmeans

    assert gpu_available(), "faiss has no GPU support here: install faiss-gpu to run the GPU k-means path"
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 32)).astype(np.float32) * 5
    labels = rng.integers(0, 8, 4000)
    x = (centers[labels] + rng.normal(size=(4000, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cent_gpu, _ = train_kmeans(x, 8, use_gpu=True, seed=1)
    cent_cpu, _ = train_kmeans(x, 8, use_gpu=False, seed=1)
    ids_gpu, _ = assign(x, cent_gpu, use_gpu=True)
    ids_cpu, _ = assign(x, cent_cpu, use_gpu=False)
    # GPU- and CPU-trained partitions agree (up to cluster numbering) and find the planted blobs
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(ids_gpu, ids_cpu) > 0.99
    assert adjusted_rand_score(ids_gpu, labels) > 0.95
    same_cent, _ = assign(x, cent_gpu, use_gpu=False)
    assert np.mean(ids_gpu == same_cent) > 0.999  # GPU and CPU assignment to the same centroids


def test_perplexity_bf16_on_cuda_close_to_fp32_cpu(ctx):
    from curate.score.stages import Perplexity

    t = toy_table(["The quick brown fox jumps over the lazy dog.", "dog the lazy over jumps fox brown quick The."],
                  instruction=[None, None], input=[None, None], output=[None, None], messages=[None, None])
    cpu = Perplexity(device="cpu", show_progress=False).annotate(t, ctx).column("ppl_text").to_numpy()
    ctx.work_dir = ctx.work_dir.parent / "work_gpu"
    gpu = Perplexity(device="cuda", show_progress=False).annotate(t, ctx).column("ppl_text").to_numpy()
    assert np.allclose(np.log(gpu), np.log(cpu), rtol=0.05)
    assert gpu[0] < gpu[1]

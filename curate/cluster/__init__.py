"""curate.cluster: FAISS k-means stage (``kmeans``) and array helpers (assignment, plots)."""
from curate.cluster.faiss_utils import (  # noqa: F401
    assign,
    default_k,
    plot_cluster_sizes,
    train_kmeans,
)

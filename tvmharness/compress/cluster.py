"""Weight clustering: each conv/linear weight replaced by the nearest of N shared values (1-D k-means
per layer, scikit-learn). The artifact stays fp32; the compressed size (indices + centroids) is what
a clustered model costs to store or ship with entropy-free packing."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from .base import NotApplicable, Technique, Work
from .metrics import clustered_bits, clustered_bytes, left_dense, weight_layers
from .prune import finalize_pruning

CLUSTERS_ATTR = "_tvmharness_clusters"  # {layer name: N}, kept on the module so a fine-tune can re-cluster
FIT_SAMPLE = 65536  # k-means is fitted on at most this many weights per layer, then every weight assigned


def cluster_weights(values: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Each value replaced by its nearest of (at most) n k-means centroids. Exact zeros (pruned
    weights) stay zero, zero being one of the n values: k-means would move them to a centroid near
    zero and undo the pruning (Deep Compression's prune -> cluster)."""
    from sklearn.cluster import KMeans

    flat = values.ravel().astype(np.float64)
    nonzero = flat != 0
    kept = flat[nonzero]
    n = min(n - (not nonzero.all()), len(np.unique(kept)))
    result = np.zeros_like(flat)
    if n >= 1:
        rng = np.random.default_rng(seed)
        sample = kept if len(kept) <= FIT_SAMPLE else kept[rng.choice(len(kept), FIT_SAMPLE, replace=False)]
        centroids = np.sort(KMeans(n_clusters=n, n_init=1, random_state=seed).fit(sample.reshape(-1, 1)).cluster_centers_.ravel())
        result[nonzero] = centroids[np.searchsorted((centroids[1:] + centroids[:-1]) / 2, kept)]
    return result.reshape(values.shape).astype(values.dtype)


def apply_clusters(module, clusters: dict[str, int]) -> None:
    import torch

    with torch.no_grad():
        for name, n in clusters.items():
            weight = module.get_submodule(name).weight
            weight.copy_(torch.from_numpy(cluster_weights(weight.detach().numpy(), n)))


class Cluster(Technique):
    kind: Literal["cluster"] = "cluster"
    version: Literal[3] = 3  # 2: exact zeros (pruned weights) stay zero; 3: a layer no smaller clustered stays fp32
    clusters: int = Field(16, ge=2, le=65536, description="shared values per layer")
    primary = "clusters"
    on_layers = True

    def apply(self, work: Work) -> Work:
        module = self.clone_module(work)
        finalize_pruning(module)
        names = {id(m): n for n, m in module.named_modules()}
        bits = int(np.ceil(np.log2(self.clusters)))
        # a layer whose indices + centroids take no less than its fp32 weights (few weights, many values): left fp32
        layers = weight_layers(module)
        clusters = {names[id(m)]: self.clusters for m in layers if clustered_bits(m.weight.numel(), self.clusters) < m.weight.numel() * 32}
        if not clusters:
            raise NotApplicable(f"no conv/linear layer is smaller as {self.clusters} shared values ({bits}-bit indices "
                                "+ centroids) than as fp32: clustering would change nothing; give fewer clusters")
        apply_clusters(module, clusters)
        setattr(module, CLUSTERS_ATTR, clusters)
        work.module = module
        work.metrics["compressed_bytes"] = clustered_bytes(module, clusters)
        dense = left_dense(module)
        small = len(layers) - len(clusters)
        work.notes.append(f"clustered the weights of {len(clusters)} conv/linear layers to {self.clusters} values each "
                          f"(k-means); compressed size {work.metrics['compressed_bytes']} B = {bits}-bit indices + centroids"
                          + (f"; {small} layer(s) too small to gain left fp32" if small else "") + (f"; {dense}" if dense else ""))
        return work

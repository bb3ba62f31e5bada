"""A short fine-tune to recover accuracy after pruning or clustering, its budget in the recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Technique, Work
from .cluster import CLUSTERS_ATTR, apply_clusters
from .training import train


class Finetune(Technique):
    """Pruned weights stay zero (the pruning masks are still in place); clustered layers are
    re-clustered to their N values afterwards."""

    kind: Literal["finetune"] = "finetune"
    version: Literal[2] = 2  # 2: on seeded noise, every output is matched (squared error), not the first's softmax
    epochs: int = Field(3, ge=1, description="passes over the training split (or over the noise batches)")
    lr: float = Field(1e-3, gt=0)
    primary = "epochs"
    on_layers = True

    def apply(self, work: Work) -> Work:
        module = self.clone_module(work)
        note = train(module, work.base, self.epochs, self.lr)
        clusters = getattr(module, CLUSTERS_ATTR, None)
        if clusters:
            apply_clusters(module, clusters)
            note += "; re-clustered afterwards"
        work.module = module
        work.notes.append("fine-tune: " + note)
        return work

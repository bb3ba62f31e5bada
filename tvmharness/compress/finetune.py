"""A short fine-tune to recover accuracy after pruning or clustering, its budget in the recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Technique, Work, same_model
from .cluster import CLUSTERS_ATTR, apply_clusters
from .metrics import weight_layers
from .training import train


class Finetune(Technique):
    """Pruned weights stay zero (by the pruning masks where still in place, else, after clustering,
    which made the masks permanent, by keeping its zero weights zero); clustered layers are
    re-clustered to their N values afterwards."""

    kind: Literal["finetune"] = "finetune"
    version: Literal[3] = 3  # 2: on seeded noise, every output is matched (squared error), not the first's softmax;
    # 3: zero weights stay zero where no pruning mask keeps them (after clustering); pruned layers read
    # without a call (attention's out_proj) train too
    epochs: int = Field(3, ge=1, description="passes over the training split (or over the noise batches)")
    lr: float = Field(1e-3, gt=0)
    primary = "epochs"
    on_layers = True

    def uses_train_data(self) -> bool:
        return True

    def apply(self, work: Work) -> Work:
        import torch
        from torch.nn.utils import prune

        data = work.base.train_data
        # Without labels, fine-tuning trains the model toward the fp32 model's outputs: the model as given
        # (no step before it changed it) gives them already, and training would only fit dropout's noise
        unchanged = (data is None or data.labels is None) and same_model(work.require_module(self.kind), work.base)
        module = self.clone_module(work)
        if unchanged:
            work.module = module
            lacks, labels = ((f"{data.source} has no labels", "its class ids under 'labels' in the train .npz")
                             if data is not None else (f"{work.base.name} has no training data",
                                                       f"it training data with labels ([data.{work.base.name}] train, or --train-data)"))
            work.notes.append(f"fine-tune: did nothing: {lacks}, and without labels fine-tuning trains the model to "
                              "match the fp32 model's outputs, which the model as given already does (no step before it "
                              f"changed it); for a classifier, give {labels}, or put finetune after a step that changes "
                              "the model (prune:0.5+finetune), where it recovers the fp32 model's outputs")
            return work
        clusters = getattr(module, CLUSTERS_ATTR, None)
        # After clustering the pruning masks are permanent: pruned zeros are kept zero by hand (only then,
        # so that a layer a model starts at zero, an adapter, still trains)
        zeros = [(m.weight, m.weight != 0) for m in weight_layers(module)
                 if clusters and not prune.is_pruned(m) and bool((m.weight == 0).any())]

        def keep_zeros() -> None:
            with torch.no_grad():
                for weight, kept in zeros:
                    weight.mul_(kept)

        note = train(module, work.base, self.epochs, self.lr, after_step=keep_zeros if zeros else None)
        if clusters:
            apply_clusters(module, clusters)
            note += "; re-clustered afterwards"
        work.module = module
        work.notes.append("fine-tune: " + note)
        return work

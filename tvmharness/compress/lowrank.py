"""Low-rank factorization: each Linear and (ungrouped) Conv2d weight split by truncated SVD into two
smaller layers (a k x k conv to `rank` channels, then a 1x1 conv back), by rank or by energy kept."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import NotApplicable, Technique, Work
from .metrics import parameter_count, shared_parameters
from .prune import finalize_pruning


def set_submodule(root, name: str, new) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


class LowRank(Technique):
    kind: Literal["lowrank"] = "lowrank"
    version: Literal[1] = 1
    rank: int | None = Field(None, ge=1, description="keep this many singular values per layer")
    energy: float | None = Field(None, gt=0, le=1, description="keep the fewest singular values whose squares sum to this share")
    primary = "energy"
    on_layers = True

    @model_validator(mode="after")
    def _one_criterion(self):
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give exactly one of rank=N or energy=F (e.g. lowrank:energy=0.9)")
        return self

    def chosen_rank(self, singular_values) -> int:
        import torch

        if self.rank is not None:
            return min(self.rank, len(singular_values))
        share = torch.cumsum(singular_values ** 2, 0) / torch.sum(singular_values ** 2)
        return int(torch.searchsorted(share, torch.tensor(self.energy * (1 - 1e-6))).item()) + 1

    def apply(self, work: Work) -> Work:
        import torch
        from torch import nn

        module = self.clone_module(work)
        finalize_pruning(module)
        swaps, kept = [], 0  # (name, layer, its factored pair, "name:rank/full rank")
        # A weight another module holds too (an output layer tied to the embedding) stays whole: the
        # other module would keep the full matrix beside the factored pair, a bigger model.
        shared, tied = shared_parameters(module), {}
        before = parameter_count(module)
        for name, layer in list(module.named_modules()):
            if isinstance(layer, nn.Linear):
                matrix = layer.weight.detach()
            elif isinstance(layer, nn.Conv2d) and layer.groups == 1:
                matrix = layer.weight.detach().reshape(layer.out_channels, -1)
            else:
                continue
            if id(layer.weight) in shared:
                tied[" = ".join(shared[id(layer.weight)])] = None  # one tensor, however many layers hold it
                continue
            u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
            r = self.chosen_rank(s)
            rows, cols = matrix.shape
            if r * (rows + cols) >= rows * cols:
                kept += 1  # factoring would not make this layer smaller
                continue
            root = torch.sqrt(s[:r])
            first_w, second_w = root[:, None] * vh[:r], u[:, :r] * root[None, :]
            if isinstance(layer, nn.Linear):
                first = nn.Linear(layer.in_features, r, bias=False)
                second = nn.Linear(r, layer.out_features, bias=layer.bias is not None)
                first.weight.data, second.weight.data = first_w.contiguous(), second_w.contiguous()
            else:
                first = nn.Conv2d(layer.in_channels, r, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                                  bias=False, padding_mode=layer.padding_mode)
                second = nn.Conv2d(r, layer.out_channels, 1, bias=layer.bias is not None)
                first.weight.data = first_w.reshape(r, *layer.weight.shape[1:]).contiguous()
                second.weight.data = second_w.reshape(layer.out_channels, r, 1, 1).contiguous()
            if layer.bias is not None:
                second.bias.data = layer.bias.detach().clone()
            swaps.append((name, layer, nn.Sequential(first, second), f"{name}:{r}/{min(rows, cols)}"))
        read = self._swap(module, swaps, work.base.example())
        factored = [label for name, _, _, label in swaps if name not in read]
        if read and not factored:
            raise NotApplicable(f"no layer of {work.base.name} can be factored: the modules around its layers read their "
                                f"weights ({' '.join(read)}), as nn.MultiheadAttention and nn.TransformerEncoderLayer do",
                                "factor a model whose layers are called, or leave lowrank out for this model")
        if tied and not factored:
            raise NotApplicable(f"no layer of {work.base.name} can be factored alone: the weights of {'; '.join(tied)} "
                                "are tied (one tensor held by several modules), and factoring one would keep the "
                                "shared matrix as well" + ("" if not kept else f"; its {kept} other layers would not "
                                "get smaller"), "untie the weights in the model, or leave lowrank out for this model")
        if not factored:  # the variant would be fp32 measured again under another name
            criterion = f"rank {self.rank}" if self.rank is not None else f"energy {self.energy:g}"
            raise NotApplicable(f"no layer of {work.base.name} gets smaller factored at {criterion}: each of its Linear "
                                "and ungrouped Conv2d layers would keep as many weights, or it has none",
                                "keep less energy or a lower rank, or leave lowrank out for this model")
        if parameter_count(module) >= before:  # a weight shared in a way not seen above: never a bigger model
            raise NotApplicable(f"factoring {' '.join(factored)} of {work.base.name} would not make it smaller "
                                f"({before:,} -> {parameter_count(module):,} parameters): their weights are used "
                                "elsewhere too", "leave lowrank out for this model")
        work.module = module.eval()
        work.notes.append(f"SVD-factored {len(factored)} layers (name:rank/full rank {' '.join(factored) or 'none'})"
                          + (f"; {kept} left whole (factoring would not shrink them)" if kept else "")
                          + (f"; left whole as their modules read their weights: {' '.join(read)}" if read else "")
                          + (f"; left whole as their weights are tied: {'; '.join(tied)}" if tied else ""))
        work.metrics["lowrank_layers"] = factored
        return work

    @staticmethod
    def _swap(module, swaps: list, example: tuple) -> list[str]:
        """Put the factored pairs in; a module that reads a layer's weight rather than calling it
        (attention, transformer layers' fast path) fails on the pair, and that layer stays whole.
        One forward pass when none does; one per layer otherwise. Returns the layers left whole."""
        import torch

        def runs() -> bool:
            try:
                with torch.no_grad():
                    module(*example)
            except AttributeError:  # "'Sequential' object has no attribute 'weight'"
                return False
            return True

        for name, _, pair, _ in swaps:
            set_submodule(module, name, pair)
        if runs():
            return []
        read = []
        for name, layer, _, _ in swaps:
            set_submodule(module, name, layer)
        for name, layer, pair, _ in swaps:
            set_submodule(module, name, pair)
            if not runs():
                set_submodule(module, name, layer)
                read.append(name)
        return read

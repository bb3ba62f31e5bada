"""Pruning: unstructured magnitude pruning (torch.nn.utils.prune) and structured channel pruning
(torch-pruning), which removes whole channels so that the network really gets smaller."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ..errors import one_line
from .base import NotApplicable, Technique, Work
from .metrics import left_dense, shared_parameters, sparsity, weight_layers
from .training import train


def finalize_pruning(module) -> None:
    """Make pruning masks permanent (weight = weight_orig x mask, the hooks removed). Until then a
    later fine-tune keeps the pruned weights at zero."""
    from torch.nn.utils import prune

    for m in module.modules():
        if prune.is_pruned(m):
            for name in [n[: -len("_orig")] for n, _ in m.named_parameters(recurse=False) if n.endswith("_orig")]:
                prune.remove(m, name)


class Prune(Technique):
    """Unstructured L1-magnitude pruning of conv and linear weights: per layer or global, at once or
    gradually (a cubic schedule over `steps`, each followed by `epochs` of fine-tuning)."""

    kind: Literal["prune"] = "prune"
    version: Literal[1] = 1
    amount: float = Field(gt=0, lt=1, description="share of weights set to zero")
    scope: Literal["layer", "global"] = "layer"
    schedule: Literal["oneshot", "gradual"] = "oneshot"
    steps: int = Field(3, ge=1, description="gradual: pruning steps")
    epochs: int = Field(1, ge=1, description="gradual: fine-tuning epochs after each step")
    lr: float = Field(1e-3, gt=0)
    primary = "amount"
    on_layers = True
    only_with = {"steps": ("schedule", "gradual"), "epochs": ("schedule", "gradual"), "lr": ("schedule", "gradual")}

    def uses_train_data(self) -> bool:
        return self.schedule == "gradual"

    def apply(self, work: Work) -> Work:
        from torch.nn.utils import prune

        module = self.clone_module(work)
        layers = weight_layers(module)
        # Masks the model came with stay, and prune's amount then counts only the weights they left
        already = sparsity(module, layers) if any(prune.is_pruned(m) for m in layers) else 0.0
        if self.schedule == "oneshot":
            targets = [self.amount]
        else:  # Zhu & Gupta's cubic schedule: prune fast first, then slowly as fewer weights remain
            targets = [self.amount * (1 - (1 - (i + 1) / self.steps) ** 3) for i in range(self.steps)]
        done = 0.0
        notes = []
        for target in targets:
            step = (target - done) / (1 - done)  # torch.nn.utils.prune's amount counts what is still unpruned
            if self.scope == "global":
                prune.global_unstructured([(m, "weight") for m in layers], pruning_method=prune.L1Unstructured, amount=step)
            else:
                for m in layers:
                    prune.l1_unstructured(m, "weight", amount=step)
            done = target
            if self.schedule == "gradual":
                notes.append(train(module, work.base, self.epochs, self.lr))
        work.module = module
        base = weight_layers(work.base.torch_module) if work.base.torch_module is not None else []
        given = sparsity(work.base.torch_module, base) if any(prune.is_pruned(m) for m in base) else 0.0
        came = (f"the model came pruned to {given:.1%} (torch.nn.utils.prune masks); " if given else "") + (
            f"an earlier step pruned it to {already:.1%}; " if already > given else "")  # (of this variant's chain)
        of = " of those left" if already else ""
        dense = left_dense(module)
        work.notes.append(f"{came}pruned {self.amount:.0%} of conv/linear weights{of} ({self.scope}, {self.schedule}); "
                          f"sparsity {sparsity(module, layers):.1%} of conv/linear weights"
                          + (f", {sparsity(module):.1%} of the model's weights; {dense}" if dense else "")
                          + (f"; {notes[-1]} after each of {self.steps} steps" if notes else ""))
        return work


def output_layers(module, example: tuple) -> list:
    """The conv/linear layers whose results reach the model's outputs through no other such layer
    (a classifier's last Linear, squeezenet's final conv, both ends of a residual output): autograd's
    graph walked back from every output, stopping at the first layer result on each path."""
    import torch

    results = {}  # the autograd node that made each layer's result -> the layer
    hooks = [m.register_forward_hook(lambda m, _, out: results.__setitem__(out.grad_fn, m)) for m in weight_layers(module)]
    frozen = [p for p in module.parameters() if not p.requires_grad]  # inference code often freezes them: no graph
    try:
        for p in frozen:
            p.requires_grad_(True)
        with torch.enable_grad():
            outputs = module(*example)
    finally:
        for p in frozen:
            p.requires_grad_(False)
        for hook in hooks:
            hook.remove()
    found, seen = {}, set()
    stack = [t.grad_fn for t in torch.utils._pytree.tree_leaves(outputs) if isinstance(t, torch.Tensor)]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in results:
            found[id(results[node])] = results[node]
        else:
            stack.extend(n for n, _ in node.next_functions)
    return list(found.values())


class ChannelPrune(Technique):
    """Structured pruning with torch-pruning: removes the `amount` share of output channels of each
    conv/linear layer by L1 magnitude (dependencies such as residual adds and flatten followed), so
    the network has fewer parameters and FLOPs. The layers that give the model's outputs keep theirs."""

    kind: Literal["channels"] = "channels"
    version: Literal[2] = 2  # 2: every layer that gives an output keeps its channels (was: the last Linear)
    amount: float = Field(gt=0, lt=1, description="share of channels removed per layer")
    scope: Literal["layer", "global"] = "layer"
    primary = "amount"
    on_layers = True

    def apply(self, work: Work) -> Work:
        import warnings

        import torch
        import torch_pruning as tp
        from torch import nn

        module = self.clone_module(work)
        finalize_pruning(module)
        outputs = output_layers(module, work.base.example())
        tied = shared_parameters(module)
        untying = self._untying(module, work.base.example(), tied, outputs) if tied else []
        before = sum(p.numel() for p in module.parameters())
        # attention's width must stay a whole number of heads: told each one's heads, torch-pruning keeps it
        heads = {m: m.num_heads for m in module.modules() if isinstance(m, nn.MultiheadAttention)}
        with warnings.catch_warnings(record=True) as caught:  # what torch-pruning assumed goes to the row's notes
            warnings.simplefilter("always")
            pruner = tp.pruner.MetaPruner(module, work.base.example(), importance=tp.importance.MagnitudeImportance(p=1),
                                          pruning_ratio=self.amount, global_pruning=self.scope == "global",
                                          ignored_layers=outputs + untying, num_heads=heads)
            pruner.step()
        after = sum(p.numel() for p in module.parameters())
        try:  # a structure torch-pruning does not know may come out inconsistent: refused here, not when measured
            with torch.no_grad():
                module.eval()(*work.base.example())
        except Exception as err:
            raise NotApplicable(f"channel pruning of {work.base.name} leaves a model that does not run: "
                                f"{type(err).__name__}: {one_line(err)}", "use unstructured pruning (prune:0.5) for this model") from None
        names = {id(m): n for n, m in module.named_modules()}
        kept_tied = "; ".join(" = ".join(found) for found in tied.values())
        if any(len({id(module.get_parameter(n)) for n in found}) > 1 for found in tied.values()):  # never untied silently
            raise NotApplicable(f"channel pruning of {work.base.name} would untie the weights of {kept_tied} (one tensor "
                                "held by several modules)", "untie them in the model, or use prune:0.5 for this model")
        if after == before:
            why = (f", and pruning the others' would untie the weights of {kept_tied} (one tensor held by several modules)"
                   if untying else ", and no other layer's are prunable")
            raise NotApplicable(f"no channel of {work.base.name} can be removed: the layers that give its outputs keep "
                                f"their channels{why}", "use unstructured pruning (prune:0.5) for this model")
        work.module = module.eval()
        work.notes.append(f"removed {self.amount:.0%} of channels ({self.scope}, L1 magnitude, torch-pruning): "
                          f"{before:,} -> {after:,} parameters"
                          + (f"; {' '.join(names[id(m)] for m in untying)} kept their channels, which would untie the "
                             f"weights of {kept_tied}" if untying else ""))
        work.notes += sorted({"torch-pruning: " + " ".join(str(w.message).split()) for w in caught
                              if w.filename.startswith(str(Path(tp.__file__).parent))})
        return work

    @staticmethod
    def _untying(module, example: tuple, tied: dict, ignored: list) -> list:
        """The layers whose channels cannot go without changing a tied weight's shape in one of the
        modules that hold it, which would make it two tensors (torch-pruning prunes each module's own)."""
        import torch_pruning as tp

        holders = {id(m) for m in module.modules() for p in m.parameters(recurse=False) if id(p) in tied}
        graph = tp.DependencyGraph().build_dependency(module, example_inputs=example)
        untying = []
        for layer in weight_layers(module):
            if any(layer is m for m in ignored):
                continue
            group = graph.get_pruning_group(layer, graph.get_pruner_of_module(layer).prune_out_channels, idxs=[0])
            if any(id(dep.target.module) in holders for dep, _ in group):
                untying.append(layer)
        return untying

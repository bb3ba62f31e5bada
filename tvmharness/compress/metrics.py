"""What a compressed model is made of: parameters, FLOPs, sparsity, compressed size."""

from __future__ import annotations

import numpy as np


def weight_layers(module) -> list:
    """The layers compression works on: convolutions and fully connected layers."""
    from torch import nn

    return [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def parameter_count(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def shared_parameters(module) -> dict[int, list[str]]:
    """The parameters more than one module holds (an output layer tied to the embedding, a layer
    registered under two names): each one's id -> its names."""
    names: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {key: found for key, found in names.items() if len(found) > 1}


def model_weights(module) -> list:
    """Every weight of the model as it computes: each conv/linear layer's (a pruned one's with its mask
    applied), and each other parameter of two dimensions or more (an embedding's table, a recurrent
    layer's matrices, attention's input projection), not biases nor the scales of norms."""
    layers = weight_layers(module)
    return [m.weight.detach() for m in layers] + [p.detach() for p, _ in _other_weights(module, layers)]


def _other_weights(module, layers: list) -> list[tuple]:
    """The weights outside conv/linear layers, each with the module that holds it (a tied one once)."""
    seen = {id(p) for m in layers for p in m.parameters()}  # (a pruned layer's weight_orig, a parametrization's original)
    found = []
    for m in module.modules():
        for p in m.parameters(recurse=False):
            if p.dim() > 1 and id(p) not in seen:
                seen.add(id(p))
                found.append((p, m))
    return found


def sparsity(module, layers: list | None = None) -> float:
    """The share of zeros in the weights of `layers`; by default in every weight of the model."""
    weights = [m.weight.detach() for m in layers] if layers is not None else model_weights(module)
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / total) if total else 0.0


def left_dense(module, said_from: float = 0.01) -> str:
    """What the conv/linear techniques (pruning, clustering) leave as it is, where it is a share of the
    model's weights worth saying (`said_from`): the weights of its other modules, by kind ("LSTM 1,536
    weights (96% of the model's)"); "" otherwise."""
    by_kind: dict[str, int] = {}
    for p, m in _other_weights(module, weight_layers(module)):
        by_kind[type(m).__name__] = by_kind.get(type(m).__name__, 0) + p.numel()
    dense, total = sum(by_kind.values()), sum(w.numel() for w in model_weights(module))
    if not total or dense < said_from * total:
        return ""
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(by_kind.items(), key=lambda kv: -kv[1]))
    return f"left as they are, being no conv/linear layer's: {kinds} weights ({dense / total:.0%} of the model's)"


def flop_count(module, example: tuple) -> int | None:
    """Dense FLOPs of one forward pass on `example` (one tensor per input; torch's own counter, a
    multiply-add counts as 2). Zeros left by unstructured pruning still count: dense kernels compute
    them. None where the counter fails."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    example = tuple(t.to(dtype) if t.is_floating_point() else t for t in example)  # an fp16 module takes fp16
    # Transformer layers' inference fast path is one fused kernel the counter does not count.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        # and on a CPU attention's fused kernel has no formula either: the plain one's products are counted
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
            module(*example)
    except Exception:  # an operator the counter cannot trace: the row still gets measured
        return None
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())


def model_metrics(module, example: tuple) -> dict:  # sparsity: of every weight of the model
    return {"params": parameter_count(module), "flops": flop_count(module, example),
            "sparsity": round(sparsity(module), 6)}


def clustered_bits(weights: int, n: int) -> int:
    """A layer's weights clustered to n values: their indices (ceil(log2 n) bits each) plus n fp32 centroids."""
    return weights * max(1, int(np.ceil(np.log2(n)))) + n * 32


def clustered_bytes(module, clustered: dict[str, int]) -> int:
    """Storage of a weight-clustered model as the literature counts it: each clustered layer's weight
    as cluster indices (ceil(log2 N) bits each) plus N fp32 centroids; every other parameter fp32."""
    n_of = {id(module.get_submodule(layer).weight): n for layer, n in clustered.items()}
    total_bits = 0
    for param in module.parameters():  # a tensor shared by several modules (tied weights) counts once
        if id(param) in n_of:
            total_bits += clustered_bits(param.numel(), n_of[id(param)])
        else:
            total_bits += param.numel() * 32
    for buffer in module.buffers():
        total_bits += buffer.numel() * buffer.element_size() * 8
    return int(np.ceil(total_bits / 8))

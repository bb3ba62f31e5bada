"""Compression techniques as recipe variants: one module per technique, one registry.

A variant is a chain of techniques applied in order, written in a recipe as a list of aliases
(["prune:0.5", "finetune", "int8"]) or one string joined by "+" ("prune:0.5+finetune+int8", which
is also the name rows are stored under). "fp32" is the model as given: the baseline every other
variant is compared with. Each technique is a typed pydantic config with a version, and a variant
round-trips to JSON (`Variant.model_dump_json` / `Variant.model_validate_json`)."""

from __future__ import annotations

import json
from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field

from ..cache import CACHE_DIR
from ..errors import HarnessError
from ..models import LoadedModel, torch_digest
from ..results import BASELINE
from .base import NotApplicable, Technique, Work, parse_alias, same_model
from .cluster import CLUSTERS_ATTR, Cluster
from .distill import Distill
from .finetune import Finetune
from .lowrank import LowRank
from .metrics import clustered_bytes, model_metrics, weight_layers
from .prune import ChannelPrune, Prune, finalize_pruning
from .quantize import FP16, Int8

TECHNIQUES = (Prune, ChannelPrune, LowRank, Cluster, Finetune, Distill, FP16, Int8)
REGISTRY: dict[str, type[Technique]] = {t.model_fields["kind"].default: t for t in TECHNIQUES}
FINAL_STEPS = ("fp16", "int8")  # they end the PyTorch model (a half-precision wrapper, an ONNX file)

AnyTechnique = Annotated[Union[Prune, ChannelPrune, LowRank, Cluster, Finetune, Distill, FP16, Int8],
                         Field(discriminator="kind")]

__all__ = ["REGISTRY", "NotApplicable", "Variant", "apply_variant", "baseline_metrics", "check_variants",
           "parse_variant"]


class Variant(BaseModel):
    """An ordered chain of techniques; no steps is the fp32 baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: list[AnyTechnique] = Field(default_factory=list)

    @property
    def name(self) -> str:
        return "+".join(step.alias() for step in self.steps) or BASELINE

    @property
    def is_baseline(self) -> bool:
        return not self.steps

    def config(self) -> list[dict]:
        """The JSON form stored with every row (kind, version and every parameter of each step)."""
        return [step.model_dump(mode="json") for step in self.steps]


VariantSpec = Union[str, list[str], Variant]


def parse_variant(spec: VariantSpec) -> Variant:
    """A recipe variant (an alias, a "+"-joined chain, a list of aliases) -> Variant. Raises HarnessError."""
    if isinstance(spec, Variant):
        return spec
    aliases = [a.strip() for part in ([spec] if isinstance(spec, str) else list(spec)) for a in str(part).split("+")]
    if aliases == [""] or not aliases:
        raise HarnessError("an empty variant", f"write \"{BASELINE}\" for the model as given, or a technique such as \"int8\"")
    if "" in aliases:  # "prune:0.5+": a step left out, or one too many "+"
        raise HarnessError(f"variant {json.dumps(spec)} has an empty step", "name a technique on each side of every '+'")
    if aliases == [BASELINE]:
        return Variant()
    if BASELINE in aliases:
        raise HarnessError(f"'{BASELINE}' in the chain {aliases}: it is the model as given, not a step",
                           f"list \"{BASELINE}\" as a variant of its own")
    steps = [parse_alias(a, REGISTRY) for a in aliases]
    finals = [i for i, s in enumerate(steps) if s.kind in FINAL_STEPS]
    if finals and (len(finals) > 1 or finals[0] != len(steps) - 1):
        raise HarnessError(f"in variant {aliases}, {steps[finals[0]].kind} must be the last step (and only one of "
                           f"{', '.join(FINAL_STEPS)})", "put quantization last, e.g. [\"prune:0.5\", \"finetune\", \"int8\"]")
    return Variant(steps=steps)


def check_variants(specs: list[VariantSpec]) -> None:
    """Every variant parses, and no two are one variant spelled two ways ("prune:0.5" and
    "prune:0.50", "cluster" and "cluster:16"): each would be measured and judged as the same series."""
    seen: dict[str, VariantSpec] = {}
    for spec in specs:
        name = parse_variant(spec).name
        if name in seen:
            raise HarnessError(f"variants {json.dumps(seen[name])} and {json.dumps(spec)} are the same variant ({name})",
                               "give each variant once")
        seen[name] = spec


def baseline_metrics(model: LoadedModel) -> dict:
    """Parameters, FLOPs and sparsity of the model as given; for an ONNX file, quantized or in half
    precision already, the tolerance its engines are judged by, as for the variants that make such."""
    if model.torch_module is None:
        from .quantize import given_precision

        return {"compression": []} | given_precision(model.onnx_path)
    return model_metrics(model.torch_module, model.example()) | {"compression": []}


def apply_variant(model: LoadedModel, spec: VariantSpec, cache_dir=None) -> LoadedModel:
    """The model with the variant's techniques applied in order, as a new LoadedModel whose
    `compression` holds the figures every row of it stores (params, flops, sparsity,
    compressed_bytes, the config); fp32 is the model given, its figures filled in where they are not
    yet. Raises HarnessError (and NotApplicable where a technique does not fit the model)."""
    from pathlib import Path

    variant = parse_variant(spec)
    if variant.is_baseline:
        model.compression = model.compression or baseline_metrics(model)
        return model
    if model.torch_module is None and any(step.kind != "int8" for step in variant.steps):
        layered = sorted({step.kind for step in variant.steps if step.on_layers})
        # A .pt2 keeps no nn.Conv/nn.Linear modules for the layer techniques to work on (_no_layers).
        where = (f"as path/to/file.py:function to compress it with {', '.join(layered)}" if layered
                 else "as a .pt2 or path/to/file.py:function to compress it otherwise")
        raise NotApplicable(f"'{model.name}' is an ONNX file; of the techniques only int8 (ONNX Runtime's quantizer) "
                            "works on one, the others on PyTorch models", f"give the model {where}")
    work = Work(base=model, cache_dir=Path(cache_dir) if cache_dir is not None else CACHE_DIR,
                module=model.torch_module, onnx_path=model.onnx_path if model.torch_module is None else None)
    last_module = model.torch_module
    for step in variant.steps:
        if step.on_layers and work.module is not None and not weight_layers(work.module):
            raise _no_layers(model, step.kind)
        work = step.apply(work)
        if work.module is not None:
            last_module = work.module  # the figures are those of the last PyTorch model (int8 ends in ONNX)
    module = work.module
    if module is not None:
        finalize_pruning(module)
    figures = work.metrics | (model_metrics(_inner(last_module), model.example()) if last_module is not None else {})
    # A clustered model's size as indices + centroids, where what came after the clustering left each
    # clustered weight with its clusters' values (a fine-tune re-clusters; channel pruning drops some;
    # pruning adds zero as one more) and stored as such (fp16, int8 or a distilled student are not).
    kinds = [step.kind for step in variant.steps]
    after = set(kinds[len(kinds) - kinds[::-1].index("cluster"):] if "cluster" in kinds else [])
    clusters = getattr(_inner(last_module), CLUSTERS_ATTR, None) if not after & {"fp16", "int8", "distill"} else None
    figures["compressed_bytes"] = None
    values = {n: _distinct_values(_inner(last_module), n) for n in clusters or {} if _has_weight(_inner(last_module), n)}
    if values and all(values[n] <= clusters[n] + 1 for n in values):  # (none left: a later step factored them all)
        figures["compressed_bytes"] = clustered_bytes(_inner(last_module), {n: max(clusters[n], values[n]) for n in values})
        if after - {"finetune"}:  # the clustering's note gave the size before them
            work.notes.append(f"compressed size after {', '.join(sorted(after))}: {figures['compressed_bytes']} B")
    elif "cluster" in kinds:
        work.notes.append(f"no compressed size: {', '.join(sorted(after - {'finetune'}))} after clustering left weights "
                          "that are no longer stored as cluster indices")
    figures["compression"] = variant.config()
    figures["uses_train_data"] = any(step.uses_train_data() for step in variant.steps)
    if module is not None:
        digest, onnx_path, source = torch_digest(module, model.inputs, model.behaviour), None, model.source
        same = digest == model.digest
    else:
        from ..cache import file_hash

        digest, onnx_path, source = file_hash(work.onnx_path), work.onnx_path, "onnx"
        # int8 that quantized no operator of the model as given (an ONNX file's too: no module before it)
        same = not work.metrics["quantized_ops"]["int8"] and (last_module is None or same_model(last_module, model))
    figures["same_as_fp32"] = same  # no step changed the model: no compression to credit (the report's best variant)
    return LoadedModel(name=model.name, source=source, inputs=model.inputs, digest=digest,
                       torch_module=module, onnx_path=onnx_path, eval_data=model.eval_data, train_data=model.train_data,
                       notes=[*model.notes, *work.notes], compression=figures, frontend=work.frontend, origin=model.origin,
                       shapes_given=model.shapes_given, behaviour=model.behaviour)


def _no_layers(model: LoadedModel, kind: str) -> NotApplicable:
    if model.source == "pt2":  # torch.export keeps the weights but not the nn.Module classes around them
        return NotApplicable(f"'{kind}' works on nn.Conv and nn.Linear layers, and an ExportedProgram (.pt2) "
                             "keeps its weights but not its layers", "give the model as path/to/file.py:function to compress it")
    return NotApplicable(f"'{kind}' works on nn.Conv and nn.Linear layers, and {model.name} has none",
                         "leave it out for this model; int8 and fp16 still apply")


def _inner(module):
    """The model inside the fp16 wrapper (its parameters are what the figures count)."""
    return getattr(module, "module", module) if type(module).__name__ == "HalfPrecision" else module


def _distinct_values(module, name: str) -> int:
    import torch

    return int(torch.unique(module.get_submodule(name).weight.detach()).numel())


def _has_weight(module, name: str) -> bool:
    try:
        return hasattr(module.get_submodule(name), "weight")
    except AttributeError:
        return False

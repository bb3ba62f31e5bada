"""What every compression technique shares: a typed, versioned config with a string alias, and the
model state a chain of techniques passes along."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ..errors import HarnessError, validation_problems
from ..models import LoadedModel, copy_module, torch_digest


class NotApplicable(HarnessError):
    """The technique does not apply to this model (e.g. distillation needs a labelled data set):
    the variant's row says so; the run goes on and does not count it as a failure."""


@dataclass
class Work:
    """The model as a chain of techniques transforms it, step by step.

    `module` is the PyTorch module while the model is still one; quantization to int8 ends with an
    ONNX file instead (`onnx_path`), since ONNX Runtime's quantizer is what makes it."""

    base: LoadedModel  # the fp32 model as loaded: the teacher, the calibration and training data
    cache_dir: Path
    module: Any = None
    onnx_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # technique-specific figures (compressed_bytes, fallbacks)
    frontend: str | None = None  # the TVM frontend the result needs, where the other cannot import it

    def require_module(self, kind: str):
        if self.module is None:
            raise HarnessError(f"'{kind}' works on a PyTorch model, but an earlier step made an ONNX file",
                               "put quantization (int8, fp16) last in the variant's list")
        return self.module


class Technique(BaseModel):
    """A compression step. Subclasses set `kind` (a Literal), `version` and `primary`: the field a
    bare alias value fills ("prune:0.5" sets amount=0.5)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # an lr of inf trains NaN weights
    primary: ClassVar[str | None] = None
    on_layers: ClassVar[bool] = False  # works on the model's nn.Conv and nn.Linear layers
    # Parameters that act only with another's value (steps only in a gradual schedule): set otherwise,
    # they would change nothing but the variant's name, and make a series of their own.
    only_with: ClassVar[dict[str, tuple[str, str]]] = {}

    def uses_train_data(self) -> bool:
        """Whether the step trains or calibrates on the model's [data] train (a row's provenance names that data where it does)."""
        return False

    @model_validator(mode="after")
    def _no_idle_parameters(self):
        defaults = type(self)._defaults()
        for name, (other, value) in self.only_with.items():
            if getattr(self, name) != defaults[name] and getattr(self, other) != value:
                raise ValueError(f"'{name}' applies only with {other}={value}")
        return self

    def alias(self) -> str:
        """The canonical recipe string: kind, then the values that differ from the defaults."""
        data = self.model_dump(exclude={"kind", "version"})
        defaults = type(self)._defaults()
        parts = []
        for name, value in data.items():
            if name in defaults and defaults[name] == value:
                continue
            text = _format(value)
            parts.append(text if name == self.primary and not parts else f"{name}={text}")
        return self.kind + (":" + ",".join(parts) if parts else "")

    @classmethod
    def _defaults(cls) -> dict:
        return {n: f.default for n, f in cls.model_fields.items() if not f.is_required()}

    def apply(self, work: Work) -> Work:
        raise NotImplementedError

    def clone_module(self, work: Work):
        """A deep copy of the current module, so that a step never changes what another variant uses."""
        module = work.require_module(self.kind)
        for m in module.modules():  # a pruned weight is computed from weight_orig x mask; deepcopy needs it detached
            for name, _ in list(m.named_parameters(recurse=False)):
                if name.endswith("_orig") and hasattr(m, name[: -len("_orig")]):
                    setattr(m, name[: -len("_orig")], getattr(m, name[: -len("_orig")]).detach())
        copy = copy_module(module)
        if self.on_layers:
            # A parametrized weight (weight_norm) is recomputed on every read: a technique that writes or
            # replaces it would be lost or refused. The copy keeps its current value as a plain weight.
            removed = remove_parametrizations(copy)
            if removed:
                work.notes.append(f"parametrizations removed on this variant's copy, each weight kept as it computes "
                                  f"(outputs unchanged; fp32 keeps them): {' '.join(removed)}")
        return copy


def same_model(module, base: LoadedModel) -> bool:
    """Whether a step's module is still the model as given: the same object, or the same architecture
    and weights (its digest)."""
    return module is base.torch_module or torch_digest(module, base.inputs, base.behaviour) == base.digest


def remove_parametrizations(module) -> list[str]:
    """Every parametrization (torch.nn.utils.parametrize) of the module removed, the tensor left as it
    computes; the names of those removed."""
    from torch.nn.utils import parametrize

    removed = []
    for name, m in list(module.named_modules()):
        if parametrize.is_parametrized(m):
            # A copy shares its parametrized class with the original, and removing deletes the property
            # from the class: the copy gets a class of its own first, or the original loses its weight
            cls = type(m)
            m.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            for tensor in list(m.parametrizations):
                parametrize.remove_parametrizations(m, tensor, leave_parametrized=True)
                removed.append(f"{name}.{tensor}" if name else tensor)
    return removed


def _format(value) -> str:
    if isinstance(value, float):
        return format(value, "g")
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_alias(text: str, registry: dict[str, type[Technique]]) -> Technique:
    """'prune:0.5,scope=global' -> Prune(amount=0.5, scope='global'). Raises HarnessError."""
    name, _, args = text.strip().partition(":")
    name = name.strip()
    if name not in registry:
        raise HarnessError(f"unknown compression technique '{name}' in variant '{text}'; known: "
                           f"{', '.join(sorted(registry))}",
                           "write variants like \"prune:0.5\", \"int8\", \"lowrank:energy=0.9\" (see README: Compression)")
    cls = registry[name]
    values: dict[str, str] = {}
    for i, part in enumerate(p.strip() for p in args.split(",") if p.strip()):
        key, eq, value = part.partition("=")
        if not eq:
            if i or cls.primary is None:
                raise HarnessError(f"'{part}' in variant '{text}' needs a name: write key=value",
                                   f"'{name}' takes {_fields_help(cls)}")
            key, value = cls.primary, part
        key = key.strip()
        if key not in cls.model_fields or key in ("kind", "version"):
            raise HarnessError(f"'{name}' has no parameter '{key}' (in variant '{text}')", f"'{name}' takes {_fields_help(cls)}")
        if key in values:
            raise HarnessError(f"'{key}' is given twice in variant '{text}'", "give each parameter once")
        values[key] = value.strip()
    return validate(cls, values, text)


def validate(cls: type[Technique], values: dict, source: str) -> Technique:
    try:
        return cls.model_validate(values)
    except ValidationError as err:
        raise HarnessError(f"bad parameters in variant '{source}': {validation_problems(err)}",
                           f"'{cls.model_fields['kind'].default}' takes {_fields_help(cls)}") from None


def _fields_help(cls: type[Technique]) -> str:
    names = [n for n in cls.model_fields if n not in ("kind", "version")]
    return ", ".join(f"{n}{' (the bare value)' if n == cls.primary else ''}" for n in names) or "no parameters"

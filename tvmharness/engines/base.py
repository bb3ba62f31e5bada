"""What runs a model: one interface for every engine, chosen by alias or passed as an object."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar

from ..cache import CACHE_DIR

if TYPE_CHECKING:  # annotations only: the command line reads ENGINE_NAMES at start-up, before numpy and the models
    import numpy as np

    from ..data import Feed
    from ..models import LoadedModel
    from ..targets import Target

ENGINE_NAMES = ("tvm", "tvm-untuned", "torch", "torch-compile", "onnxruntime")  # every Engine.name get_engine knows


@dataclass
class EngineOptions:
    frontend: str = "torch"  # how torch models reach TVM
    cache_dir: Path = CACHE_DIR
    threads: int = 1
    records_root: Path | None = None  # tuning records per target (results/tuning); None: build untuned


@dataclass
class Session:
    """A model loaded on one engine, ready to run one batch at a time.

    `run` takes one call's inputs (a Feed: one array per model input) and returns every output, in
    order (measure.output_arrays); `bind` returns a no-argument callable that runs one inference on
    inputs already bound, which is what the timing protocol repeats.
    """

    engine: str
    run: Callable[[Feed], list[np.ndarray]]
    bind: Callable[[Feed], Callable[[], None]]
    artifact: Path | None
    artifact_bytes: int
    cache_hit: bool | None  # None: nothing is built for this engine
    threads: int
    tuned: bool | None = None  # only meaningful for compilers
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # engine-specific provenance (build key, manifest)
    profile: Callable[[], dict[str, float]] | None = None  # per-operator median ms on the bound input


class Engine(ABC):
    name: ClassVar[str]

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def prepare(self, model: LoadedModel, target: Target, options: EngineOptions) -> Session:
        """Build or load the model for this engine; raises HarnessError with the reason on failure."""


def get_engine(engine: str | Engine) -> Engine:
    """An engine object from its alias ("tvm", "torch", "onnxruntime"), or the object itself."""
    if isinstance(engine, Engine):
        return engine
    from .onnxruntime import OnnxRuntimeEngine
    from .torch import TorchCompileEngine, TorchEngine
    from .tvm import TVMEngine, TVMUntunedEngine

    registry = {e.name: e for e in (TVMEngine, TVMUntunedEngine, TorchEngine, TorchCompileEngine, OnnxRuntimeEngine)}
    if engine not in registry:
        from ..errors import HarnessError

        raise HarnessError(f"unknown engine '{engine}'; known engines: {', '.join(ENGINE_NAMES)}", "use one of those")
    return registry[engine]()

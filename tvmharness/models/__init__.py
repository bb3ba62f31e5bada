"""The model zoo and user model files, loaded into one shape the stages share.

A model spec is a zoo name (`tvmharness models`), a path to a .pt2 ExportedProgram or an .onnx
file, or `path/to/file.py:function` / `package.module:function` returning `(nn.Module, example)`, the
example one tensor or a tuple of them (one per input of `forward`, float, integer or bool).
Nothing is downloaded: torchvision models start from a seeded init.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import functools
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import io
import json
import logging
import os
import re
import sys
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..cache import content_hash, file_hash
from ..data import (FROM_EXAMPLE, GIVEN_RANGE, DataSet, Feed, ModelInput, data_set, digits_split, fed_text, input_text,
                    load_data_set, random_feeds, sizes_text)
from ..errors import FAILED, RELATIVE_PATHS, HarnessError, one_line, path_text, toml_table
from ..measure import output_leaves
from ..provenance import PACKAGES, STAND_INS

SEEDED_NOTE = "seeded init, batch-norm statistics from seeded noise: no pretrained weights are downloaded"


@dataclass
class LoadedModel:
    name: str
    source: str  # zoo | pt2 | onnx | python
    inputs: tuple[ModelInput, ...]  # what forward takes, in order, each with its batch dimension
    digest: str  # content hash of architecture and weights
    torch_module: object | None = None  # an eval-mode nn.Module (None for ONNX files)
    exported: object | None = None  # a torch.export.ExportedProgram when the file was one
    onnx_path: Path | None = None
    eval_data: DataSet | None = None  # held-out samples (labelled: accuracy), what every engine is fed
    train_data: DataSet | None = None  # training samples: fine-tuning, distillation, int8 calibration
    notes: list[str] = field(default_factory=list)
    cache_hit: bool | None = None  # trained weights came from the cache (None: nothing was trained)
    compression: dict = field(default_factory=dict)  # params, flops, sparsity, ... of a compressed variant
    frontend: str | None = None  # the TVM frontend this model needs, where the other one cannot import it
    origin: str = ""  # where it came from: a zoo name, a file's absolute path, a module:function
    shapes_given: tuple[str, ...] = ()  # inputs whose sizes the user gave (--input-shape, [inputs]), not the model
    # what the module's code and its settings beyond its layers were at load (torch_behaviour), before anything
    # ran it: its variants' digests take this, not their copy's (a forward's counter moved by every timed call)
    behaviour: list | None = None

    @property
    def batch(self) -> int:
        """The first size of the first input: what the rows' batch column records."""
        shape = self.inputs[0].shape if self.inputs else ()
        return shape[0] if shape else 1

    @property
    def baseline_engine(self) -> str:
        """fp32 PyTorch when there is a torch model; ONNX Runtime for ONNX files."""
        return "torch" if self.torch_module is not None else "onnxruntime"

    def samples(self, count: int) -> list[Feed]:
        """The inputs every engine sees: every batch of the held-out data when the model has some,
        else `count` seeded ones."""
        if self.eval_data is not None:
            return self.eval_data.feeds(self.batch)
        return random_feeds(self.inputs, count)

    @property
    def eval_labels(self) -> np.ndarray | None:
        """The labels of the samples `samples` feeds, where the held-out data has labels."""
        if self.eval_data is None or self.eval_data.labels is None:
            return None
        return self.eval_data.labels_fed(self.batch)

    def data_ranges(self) -> str:
        """The values the held-out data feeds integer inputs ("input 'ids' of val.npz holds [-1, 200]"), the
        first suspect where the model raises on them (an embedding's lookup past its rows); "" where none."""
        if self.eval_data is None:
            return ""
        fed = [(i, a) for i, a in zip(self.inputs, self.eval_data.arrays) if not i.is_float and a.size]
        return ", ".join(f"input '{i.name}' of {self.eval_data.source.split(' (')[0]} holds [{int(a.min())}, {int(a.max())}]"
                         for i, a in fed)

    def given_ranges(self) -> str:
        """The value ranges the user gave the seeded inputs ("input 'ids' seeded in [0, 1500]"), the first
        suspect where the model raises on them (an embedding's lookup past its rows); "" where none."""
        given = [i for i in self.inputs if i.range_from == GIVEN_RANGE] if self.eval_data is None else []
        return ", ".join(f"input '{i.name}' seeded in [{i.value_range[0]}, {i.value_range[1]}]" for i in given)

    def example(self) -> tuple:
        """One seeded call's inputs as torch tensors: what export, FLOP counting and structured
        pruning trace the model with."""
        import torch

        return tuple(torch.from_numpy(a) for a in random_feeds(self.inputs, 1)[0])

    def exported_program(self):
        """torch.export of the module on the example shapes (the .pt2 itself for .pt2 files)."""
        if self.exported is None:
            import torch

            try:
                with quiet_torch_export():
                    exported = torch.export.export(fold_batchnorm(self.torch_module), self.example())
            except Exception as err:  # torch raises many types here; all mean "does not export"
                self._check_runs_eagerly()  # a model that fails on its own example is no tracing problem
                raise HarnessError(f"model '{self.name}' does not export with torch.export: {one_line(err)}",
                                   "make the forward pass traceable (no data-dependent Python control flow), "
                                   "or give an .onnx file instead", FAILED) from None  # a build that failed, not usage
            clash = _graph_module_clash(self.name, exported)
            if clash:
                raise HarnessError(*clash, FAILED)
            self.exported = exported
        return self.exported

    def output_names(self) -> list[str]:
        """Each output's name, flattened as torch.export flattens them: one tensor "output", a tuple's
        "output.0", "output.1", a dict's its keys ("aux.0" for a tuple in it); an ONNX file's its graph's
        (the ONNX export names them as torch.export does, and an int8 variant keeps them)."""
        if self.onnx_path is not None:
            import onnx

            return [o.name for o in onnx.load(str(self.onnx_path), load_external_data=False).graph.output]
        from torch.utils import _pytree

        spec = self.exported_program().call_spec.out_spec
        paths, _ = _pytree.tree_flatten_with_path(_pytree.tree_unflatten(list(range(spec.num_leaves)), spec))
        names = [".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path) for path, _ in paths]
        names = [name if name and not name[0].isdigit() else ".".join(filter(None, ("output", name))) for name in names]
        # each its own name, none an input's (a dict key "x" of forward(x)): ONNX refuses a value defined twice
        taken, unique = {i.name for i in self.inputs}, []
        for name in names:
            mine, k = name, 1
            while mine in taken:
                mine, k = f"{name}_out{k if k > 1 else ''}", k + 1
            taken.add(mine)
            unique.append(mine)
        return unique

    def _check_runs_eagerly(self) -> None:
        """Raises HarnessError where the module, run as plain PyTorch on the example's shapes, raises."""
        import torch

        try:
            with torch.no_grad():
                self.torch_module(*self.example())
        except Exception as err:  # the user's forward may raise anything
            shapes = ", ".join(input_text(i.name, i.dtype, i.shape) for i in self.inputs)
            ranges = self.given_ranges()
            if self.shapes_given or ranges:  # sizes or values of the user's that the model refuses (an exported bound, a layer's size, a vocabulary)
                given = ", ".join([f"{i.name}={sizes_text(i.shape)}" for i in self.inputs if i.name in self.shapes_given]
                                  + ([ranges] if ranges else []))
                said = [(w, flag) for w, flag, on in (("sizes", "--input-shape", self.shapes_given),
                                                      ("value ranges", "--input-range", ranges)) if on]
                what, flags = " and ".join(w for w, _ in said), ", ".join(f for _, f in said)
                fixes = [fix for fix, on in (("give sizes the model takes (its example's, or within the bounds it was "
                                              "exported with)", self.shapes_given),
                                             ("keep the ranges within what it accepts (an embedding's ids below its "
                                              "number of rows)", ranges)) if on]
                raise HarnessError(f"model '{self.name}' raised at the {what} given for it ({flags} or [inputs]: "
                                   f"{given}) in PyTorch itself: {type(err).__name__}: {one_line(err)}",
                                   "; ".join(fixes) + ", or drop them") from None
            raise HarnessError(f"model '{self.name}' raised on its example ({shapes}) in PyTorch itself: "
                               f"{type(err).__name__}: {one_line(err)}",
                               "fix the model, or its example (the inputs' shapes and dtypes its forward takes)",
                               exit_code=FAILED) from None


@contextlib.contextmanager
def quiet_treespec():
    """torch's pytree code warns that its own check is deprecated (`isinstance(treespec, LeafSpec)`)
    when an exported program's module is copied or converted: torch's business, not the user's. Only
    that warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
        yield


def copy_module(module):
    """A deep copy of a module (a .pt2's too, whose copy sets off the warning quiet_treespec silences)."""
    import copy

    with quiet_treespec():
        return copy.deepcopy(module)


@contextlib.contextmanager
def quiet_torch_export():
    """torch.export logs a traceback and prints the graph it stopped in before it raises; the
    error itself, which the caller turns into one message, says what is wrong."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch.fx.experimental.symbolic_shapes")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def fold_batchnorm(module):
    """Eval-mode batch norm folded into the convolution before it (torch.fx), so compiled kernels do
    not carry it as four element-wise ops after every conv. Modules fx cannot trace stay as they are."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(copy_module(module))
    except Exception:  # fx tracing fails on data-dependent control flow; export reports that itself
        return module


@dataclass(frozen=True)
class ZooEntry:
    description: str
    inputs: tuple[ModelInput, ...]  # "batch" for the first size: [measure] batch
    factory: Callable[[Path], tuple[object, bool | None]]  # -> (module, trained weights came from the cache)


def _image(*shape: int) -> tuple[ModelInput, ...]:
    return (ModelInput("input", ("batch", *shape)),)


_TORCHVISION_OPS: list = []  # the op library must live as long as the process, or its schemas go


def _import_torchvision():
    """Import torchvision beside a torch it was not built for (its wheel is a CUDA build; the CPU
    torch lacks the CUDA libraries its C++ ops link to). Its import then fails declaring a fake nms
    for an operator that never loaded. The zoo uses only its model definitions, so declare the
    detection ops it registers, without kernels; where its ops load, nothing is declared."""
    import torch

    if not _TORCHVISION_OPS and "torchvision" not in sys.modules:
        ops = Path(importlib.util.find_spec("torchvision").origin).parent
        try:
            torch.ops.load_library(next(ops.glob("_C.*so")))
        except (OSError, StopIteration):
            library = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _TORCHVISION_OPS.append(library)
    import torchvision

    return torchvision


def _torchvision(arch: str) -> Callable[[Path], tuple[object, bool | None]]:
    def build(_cache_dir: Path):
        import torch

        torchvision = _import_torchvision()

        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None)
        _calibrate_batchnorm(model, (8, 3, 224, 224))
        return model, None

    return build


def _calibrate_batchnorm(model, shape: tuple[int, ...]) -> None:
    """Set batch-norm statistics from seeded noise, so a seeded-init network gives input-dependent,
    well-scaled outputs (with default statistics most give ~1e-9 logits and one class for every input)."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
    gen = torch.Generator().manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(2 if norms else 0):
            model(torch.randn(shape, generator=gen))
    model.eval()


def _digits(cache_dir: Path):
    from .digits import digits_cnn

    return digits_cnn(cache_dir)


def _bert_tiny(_cache_dir: Path):
    from .text import bert_tiny

    return bert_tiny(), None


def _text(sequence: int, vocabulary: int) -> tuple[ModelInput, ...]:
    return (ModelInput("input_ids", ("batch", sequence), "int64", (0, vocabulary - 1), "the vocabulary"),
            ModelInput("attention_mask", ("batch", sequence), "int64", (0, 1), "a padding mask"))


ZOO: dict[str, ZooEntry] = {
    "digits_cnn": ZooEntry("small CNN trained here on scikit-learn digits (real accuracy)", _image(1, 8, 8), _digits),
    "resnet18": ZooEntry("torchvision resnet18, " + SEEDED_NOTE, _image(3, 224, 224), _torchvision("resnet18")),
    "resnet50": ZooEntry("torchvision resnet50, " + SEEDED_NOTE, _image(3, 224, 224), _torchvision("resnet50")),
    "mobilenet_v2": ZooEntry("torchvision mobilenet_v2, " + SEEDED_NOTE, _image(3, 224, 224), _torchvision("mobilenet_v2")),
    "squeezenet1_1": ZooEntry("torchvision squeezenet1_1, " + SEEDED_NOTE, _image(3, 224, 224), _torchvision("squeezenet1_1")),
    "efficientnet_b0": ZooEntry("torchvision efficientnet_b0, " + SEEDED_NOTE, _image(3, 224, 224), _torchvision("efficientnet_b0")),
    "bert_tiny": ZooEntry("text classifier of BERT-tiny's shape (2 layers, width 128, 2 heads, 128 tokens, token ids and "
                          "an attention mask), seeded init: no pretrained weights are downloaded", _text(128, 30522), _bert_tiny),
}


def torch_digest(module, inputs: tuple[ModelInput, ...], behaviour: list | None = None) -> str:
    """Architecture (its repr, and each layer's plain settings), the inputs it is measured on, every
    weight's bytes, and its behaviour: the user's own code the layers run (a forward edited with no layer
    or weight changed is another model) and what that code reads beyond the layers (torch_behaviour;
    given, for a variant: its model's at load)."""
    import torch

    # A model of one float input keeps the digest it had when models took only that (its history).
    single = len(inputs) == 1 and inputs[0].dtype == "float32"
    parts: list = [repr(module), list(inputs[0].shape) if single else [i.signature() for i in inputs],
                   _settings(module)]
    weights = module.state_dict()
    for name, tensor in weights.items():
        parts += [name, *_state_parts(tensor)]
    # Tensors forward reads that the state dict leaves out: buffers registered persistent=False (a
    # rotary embedding's inv_freq) and plain tensor attributes. Only where a model has them, so the
    # others keep their digests (their histories and cached builds).
    unsaved = [(name, t) for name, t in module.named_buffers() if name not in weights]
    unsaved += [(f"{prefix}.{key}" if prefix else key, value) for prefix, sub in module.named_modules()
                for key, value in sorted(vars(sub).items()) if isinstance(value, torch.Tensor)]
    for name, tensor in unsaved:
        parts += ["unsaved", name, str(tensor.dtype), list(tensor.shape), _tensor_bytes(tensor)]
    return content_hash(*parts, *(torch_behaviour(module) if behaviour is None else behaviour))


def torch_behaviour(module) -> list:
    """What a module computes with beyond its layers' weights and plain settings: its layers' hidden
    settings (only where a model has such, as `unsaved` above) and the user's code it runs, with what
    that code reads (_own_code)."""
    hidden = _hidden_settings(module)
    return (["hidden", hidden] if hidden else []) + _own_code(module)


def _state_parts(value) -> list:
    """A state dict entry: a tensor's dtype, shape and bytes; what a layer's own state holds besides
    (a get_extra_state's objects, a packed tuple of tensors) by its parts, its value or its pickle."""
    import pickle

    import torch

    if isinstance(value, torch.Tensor):
        return [str(value.dtype), list(value.shape), _tensor_bytes(value)]
    if isinstance(value, (tuple, list)):
        return [type(value).__name__, [_state_parts(v) for v in value]]
    if isinstance(value, dict):
        return ["dict", [[str(k), _state_parts(v)] for k, v in value.items()]]
    if isinstance(value, np.ndarray):
        return ["ndarray", str(value.dtype), list(value.shape), value.tobytes()]
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.dtype)):
        return [type(value).__name__, repr(value)]
    try:  # an object of its own: its pickled state (a repr may hold its address, new each process)
        return [type(value).__name__, pickle.dumps(value)]
    except Exception:
        return [type(value).__name__]


def _tensor_bytes(tensor) -> bytes:
    import torch

    t = tensor.detach().cpu().contiguous()
    data = t.int_repr() if t.is_quantized else t
    try:
        return data.numpy().tobytes()
    except TypeError:  # bfloat16 and float8 have no numpy dtype: their bytes as they are
        return data.reshape(-1).view(torch.uint8).numpy().tobytes()


def _settings(module) -> list:
    """Each layer's plain attributes, which its repr may not show (nn.MultiheadAttention's num_heads, a
    user's temperature) and its forward reads: two models of the same weights that differ only there
    compute different things. Functions (an activation) by name."""
    out = []
    for name, sub in module.named_modules():
        fields = {k: _settings_plain(v) for k, v in sorted(vars(sub).items()) if not k.startswith("_") and k != "training"}
        out.append([name, {k: v for k, v in fields.items() if v is not _SKIP}])
    return out


_SKIP = object()


@functools.cache
def _module_internals() -> frozenset[str]:
    """The attributes every nn.Module keeps for itself (its parameters, submodules, hooks): not settings."""
    import torch

    return frozenset(vars(torch.nn.Module()))


def _hidden_settings(module) -> list:
    """What a layer's forward may read that _settings and the state dict leave out: a layer of the user's
    (or a library's) own class's private settings (self._scale) and settings held in a dict, a
    dataclass or an object of its own (self.cfg = {"scale": 2.0}); and, on any layer, the hooks
    registered on it and a forward set on it alone (the user's code: _own_code follows it)."""
    out = []
    for name, sub in module.named_modules():
        found = {}
        if _class_origin(type(sub)) != "recorded":  # torch's and torchvision's layers: their versions name them
            for key, value in sorted(vars(sub).items()):
                if key in _module_internals() or isinstance(value, _torch_types()):
                    continue
                if key.startswith("_") or _settings_plain(value) is _SKIP:
                    if (held := _held_value(value)) is not _SKIP:
                        found[key] = held
        hooks = _instance_functions(sub)
        if hooks:
            found["hooks and forward"] = [_held_value(h) for h in hooks]  # a hook object's settings too
        if found:
            out.append([name, found])
    return out


def _torch_types() -> tuple[type, ...]:
    """Values a layer holds that are hashed elsewhere: tensors (its state, `unsaved`), layers (their own entry)."""
    import torch

    return (torch.Tensor, torch.nn.Module)


def _settings_plain(value):
    """A public attribute's value as _settings keeps it, or _SKIP: tensors are in the state dict,
    submodules have their own entry, what else a layer holds is _hidden_settings'."""
    import inspect

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        items = [_settings_plain(v) for v in value]
        return items if all(i is not _SKIP for i in items) else _SKIP
    if inspect.isroutine(value):
        return _callable_text(value)
    return _SKIP


def _held_value(value, depth: int = 0):
    """A setting's value by its parts: numbers and strings as they are, a dict's, a list's, a
    dataclass's or a plain object's items by theirs (a few levels deep), functions by name; _SKIP for
    what has none of those (a lock, a file handle)."""
    import dataclasses
    import inspect

    import torch

    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if isinstance(value, torch.Tensor):  # one in a dict or a hook's closure (a layer's own are its state, `unsaved`)
        return [str(value.dtype), list(value.shape), content_hash(_tensor_bytes(value))]
    if depth > 4 or isinstance(value, torch.nn.Module):  # (a layer has its own entry)
        return _SKIP
    if isinstance(value, (tuple, list, set, frozenset)):
        items = [i for i in (_held_value(v, depth + 1) for v in value) if i is not _SKIP]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, dict):  # keys by their value too (an object's key by its own, not by its address)
        items = [(_held_value(k, depth + 1), _held_value(v, depth + 1)) for k, v in value.items()]
        return sorted(([k, v] for k, v in items if k is not _SKIP and v is not _SKIP), key=repr)
    if inspect.isroutine(value) or inspect.isclass(value) or inspect.ismodule(value) or isinstance(value, functools.partial):
        return _callable_text(value)
    if isinstance(value, np.ndarray):
        return [str(value.dtype), list(value.shape), content_hash(np.ascontiguousarray(value).tobytes())]
    if isinstance(value, enum.Enum):
        return repr(value)
    if dataclasses.is_dataclass(value):  # (one with slots has no __dict__)
        return [type(value).__qualname__, _held_value({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, depth + 1)]
    if hasattr(value, "__dict__"):
        # a settings object: a namespace's or the user's own class's, by its fields; another library's
        # (a logger, whose state is the process's) by its type alone
        if isinstance(value, (types.SimpleNamespace, argparse.Namespace)):
            return [type(value).__qualname__, _held_value(dict(vars(value)), depth + 1)]
        if _class_origin(type(value)) == "user":  # its class's defaults too (class Cfg: scale = 1.0)
            defaults = {k: v for c in reversed(type(value).__mro__[:-1]) for k, v in vars(c).items()
                        if not k.startswith("__") and not callable(v) and not isinstance(v, (property, staticmethod, classmethod))}
            return [type(value).__qualname__, _held_value(defaults | dict(vars(value)), depth + 1)]
        return type(value).__qualname__
    try:
        text = repr(value)  # a torch.dtype: its repr, unless that holds an address (new each process)
    except Exception:  # a repr of the user's that raises: nothing to go by
        return _SKIP
    return _SKIP if " at 0x" in text else text


def _instance_functions(sub) -> list:
    """The hooks registered on a layer (forward and pre-forward) and a forward set on the layer itself."""
    hooks = [h for table in (sub._forward_pre_hooks, sub._forward_hooks) for h in table.values()]
    return hooks + ([vars(sub)["forward"]] if "forward" in vars(sub) else [])


def _callable_text(function) -> str:
    """A function's, class's or module's name (a hook's, an activation's), with a partial's arguments."""
    if isinstance(function, functools.partial):
        return repr([_callable_text(function.func), _held_value(list(function.args)), _held_value(function.keywords)])
    function = getattr(function, "__func__", function)  # a bound method: its function
    if not hasattr(function, "__qualname__"):  # a module, a callable object
        return getattr(function, "__name__", type(function).__qualname__)
    return f"{getattr(function, '__module__', '')}.{function.__qualname__}"


def _class_origin(cls) -> str:
    """Whose code a class is: "recorded" (torch's, torchvision's, the standard library's, the harness's:
    rows name them by a version), "library" (an index installed it) or "user" (a file of the user's, a
    notebook's class)."""
    import inspect

    # its methods' file, else its module's (a file loaded by path is in no sys.modules entry, or in another
    # module's of its name); not inspect.getfile, which TVM replaces with one that raises there
    file = next((f.__code__.co_filename for f in vars(cls).values() if inspect.isfunction(f)), None) or getattr(
        sys.modules.get(cls.__module__), "__file__", None)
    if file is None or not Path(file).is_file():
        return "recorded" if cls.__module__ == "builtins" or cls.__module__ in sys.builtin_module_names else "user"
    found = _own(file)
    return "recorded" if found is None else "library" if isinstance(found, str) else "user"


def _own_code(module) -> list[str]:
    """The hashes of the user's files whose code the module runs: those defining the methods of its
    classes (and of the classes they derive from: a torchvision ResNet whose _forward_impl is
    overridden), and, followed from those methods, the functions, classes and modules they name (an
    activation in the user's utils.py). A package the user installed from a folder or file of theirs is
    theirs too (its version need not change with its code); a library an index installed (timm) is named
    by its version; the packages whose versions every row records (torch, torchvision), the standard
    library and the harness (its commit) are not named at all, so zoo models keep their digests."""
    import inspect

    import torch

    def methods(cls) -> list:
        return [f for c in cls.__mro__ for f in vars(c).values() if inspect.isfunction(f)]

    def functions(value) -> list:
        """A hook's code: a function's, a bound method's, a partial's, a callable object's methods."""
        if isinstance(value, functools.partial):
            return functions(value.func)
        value = getattr(value, "__func__", value)
        return [value] if inspect.isfunction(value) else methods(type(value)) if callable(value) else []

    files: set[Path] = set()
    texts: set[str] = set()  # code in no file, values, libraries' versions: only where a model has such
    todo = [f for cls in {type(m) for m in module.modules()} for f in methods(cls)]
    todo += [f for m in module.modules() for hook in _instance_functions(m) for f in functions(hook)]
    seen: set[int] = set()
    while todo:
        function = todo.pop()
        if id(function) in seen:
            continue
        seen.add(id(function))
        if inspect.isfunction(getattr(function, "__wrapped__", None)):  # a decorated forward (@torch.no_grad()): the user's under it
            todo.append(function.__wrapped__)
        found = _own(function.__code__.co_filename)
        if isinstance(found, str):  # a library's code is not followed: its version stands for it
            texts.add(content_hash("library", found))
            continue
        if found:
            files.add(found)
        elif _unfiled(function):  # a notebook cell's or exec'd code, in no file to hash: its own text
            texts.add(content_hash("code", _code_text(function)))
        else:
            continue  # recorded code (torch's): the row's versions name it
        for cell in function.__closure__ or ():  # a hook's or a nested forward's captured values
            with contextlib.suppress(ValueError):  # (a cell not yet filled)
                if inspect.isfunction(cell.cell_contents):
                    todo.append(cell.cell_contents)
                elif inspect.isclass(cell.cell_contents):  # super()'s __class__: code followed where it runs
                    continue
                elif (held := _held_value(cell.cell_contents)) is not _SKIP:
                    texts.add(content_hash("captured", held))
        for name in _names(function.__code__):
            value = function.__globals__.get(name, _SKIP)  # (an attribute's name, a builtin's: none)
            if inspect.ismodule(value) and (found := _own(getattr(value, "__file__", None))):
                if isinstance(found, str):
                    texts.add(content_hash("library", found))
                else:
                    files.add(found)
            elif inspect.isfunction(value):
                todo.append(value)
            elif inspect.isclass(value):
                todo += methods(value)
            elif _plain(value):  # a constant: a notebook cell's, one imported from a file, one read from the environment
                texts.add(content_hash("value", name, repr(value)))
            elif isinstance(value, (torch.Tensor, np.ndarray)):  # a module's tensor (a normalisation's mean)
                texts.add(content_hash("value", name, _held_value(value)))
    return sorted(file_hash(f) for f in files) + sorted(texts)


def _own(file) -> Path | str | None:
    """The user's file, `name==version` of a library's, or None (recorded code, or no file)."""
    path = Path(file).resolve() if file else None
    if not path or not path.is_file():
        return None
    if any(path.is_relative_to(f) and not SITE_FOLDERS & set(path.relative_to(f).parts) for f in _recorded_code()):
        return None
    return _installed_library(path) or path


SITE_FOLDERS = {"site-packages", "dist-packages"}


def _canonical(dist: str) -> str:
    """A distribution's name as PEP 503 compares them (scikit_learn, Torch-Pruning)."""
    return re.sub(r"[-_.]+", "-", dist).lower()


@functools.cache
def _distributions_of() -> dict[str, list[str]]:
    """Each top-level module's distributions (importlib's mapping: its file lists, read once)."""
    return importlib.metadata.packages_distributions()


@functools.cache
def _recorded_code() -> tuple[Path, ...]:
    """Where the code lies that a row names by a version rather than by its hashes: the packages of the
    distributions every row records (or their stand-ins, found through their metadata: a site folder of
    another environment on the path holds them too), the standard library's (less its site folders: a
    package installed without a virtual environment lies in the standard library's folder), and the harness's."""
    import sysconfig

    recorded = {_canonical(n) for name in PACKAGES for n in (name, *STAND_INS.get(name, ()))}
    paths = sysconfig.get_paths()  # the standard library's folders, not the prefix (/usr)
    folders = {Path(paths[k]).resolve() for k in ("stdlib", "platstdlib")} | {Path(__file__).resolve().parents[1]}
    for top, dists in _distributions_of().items():
        for dist in (d for d in dists if _canonical(d) in recorded):
            located = Path(importlib.metadata.distribution(dist).locate_file(top))
            folders |= {p.resolve() for p in (located, located.with_name(f"{top}.py")) if p.exists()}
    return tuple(folders)


@functools.cache
def _installed_library(path: Path) -> str | None:
    """`name==version` of the distribution an index installed the file from (timm, einops): its version
    names its code. None for a file of no distribution's, or of one the user installed from a folder or
    file of theirs (pip install ., a wheel they built: its direct_url.json says file:), whose version
    need not change with its code."""
    site = next((Path(p).resolve() for p in sys.path if p and Path(p).name in SITE_FOLDERS
                 and path.is_relative_to(Path(p).resolve())), None)
    if site is None:
        return None
    for name in _distributions_of().get(path.relative_to(site).parts[0].removesuffix(".py"), []):
        dist = importlib.metadata.distribution(name)
        origin = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
        return None if origin.startswith("file:") else f"{name}=={dist.version}"
    return None


def _plain(value) -> bool:
    """A number, string or flag, or a tuple of them: a value whose repr is what it is."""
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return isinstance(value, (bool, int, float, complex, str, bytes, type(None)))


def _unfiled(function) -> bool:
    """Code of a module that has no file: a notebook's (IPython's __main__, whose cells are named after
    files it never writes) or exec'd code's. Code a module with a file generates (a dataclass's
    __init__, a namedtuple's __new__) is that module's, which its file or its library's version stands for."""
    module = sys.modules.get(function.__module__) if function.__module__ else None
    return (not Path(function.__code__.co_filename).is_file() and getattr(module, "__file__", None) is None
            and not function.__code__.co_filename.startswith("<frozen "))


def _code_text(function) -> str:
    """A function's source where the interpreter keeps it (IPython keeps its cells'), else its code:
    instructions, names and constants, those of its nested functions too."""
    import inspect

    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        pass

    def text(code) -> str:
        consts = [text(c) if hasattr(c, "co_code") else repr(sorted(map(repr, c)) if isinstance(c, frozenset) else c)
                  for c in code.co_consts]
        return repr([code.co_code.hex(), code.co_names, code.co_varnames, consts])

    return text(function.__code__)


def _names(code) -> set[str]:
    """The global names a function's code reads, its nested functions' and comprehensions' too."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names(const)
    return names


def load_model(spec: str, cache_dir: Path, batch: int = 1, settings: dict[str, dict] | None = None) -> LoadedModel:
    """A zoo name, .pt2, .onnx or module:function -> LoadedModel. `batch` is the first size of zoo
    models' inputs and of a file's dynamic first dimension; `settings` (a recipe's [inputs] for this
    model, by input name: Recipe.input_settings) give sizes and integer ranges. Raises HarnessError on bad specs."""
    check_spec(spec)
    settings = settings or {}
    path = Path(spec)
    if spec in ZOO:
        model = _load_zoo(spec, cache_dir, batch, settings)
    elif spec.endswith(".pt2"):
        model = _load_pt2(_existing(path), batch, settings)
    elif spec.endswith(".onnx"):
        model = _load_onnx(_existing(path), batch, settings)
    else:
        model = _load_python(spec, settings)
    model.origin = _origin(spec)
    model.shapes_given = tuple(i.name for i in model.inputs if (settings.get(i.name) or {}).get("shape"))
    if model.shapes_given and model.torch_module is not None:  # a layer sized for its example's image: the
        model._check_runs_eagerly()                           # user's sizes, said before anything runs
    return model


def check_spec(spec: str) -> None:
    """A spec that names no model (no zoo name, model file or module:function) is refused, before any
    model of a recipe is loaded (a digits CNN trained first, and then a typo said, is minutes lost)."""
    if spec in ZOO or spec.endswith((".pt2", ".onnx")) or ":" in spec:
        return
    if spec.endswith(".py"):  # a file of functions: which one builds the model
        raise HarnessError(f"'{spec}' names a Python file but not the function in it that builds the model",
                           f"add :FUNCTION, the function returning (nn.Module, example): {spec}:FUNCTION")
    raise HarnessError(f"unknown model '{spec}'; zoo models: {', '.join(ZOO)}",
                       "use a zoo name, a .pt2 or .onnx file, or module:function")


def _origin(spec: str) -> str:
    """Where a spec's model comes from, wherever it was run from: a zoo name, a file's absolute path
    (path.py:function for a function in a file), or module:function."""
    if spec.endswith((".pt2", ".onnx")):
        return str(Path(spec).resolve())
    module, _, function = spec.rpartition(":")
    return f"{Path(module).resolve()}:{function}" if module.endswith(".py") else spec


def same_origin(one: str, other: str) -> bool:
    """Whether two origins name one model: `mynet:small_net` and `/abs/mynet.py:small_net` do where the
    module `mynet` here is that file."""
    return one == other or _origin_file(one) == _origin_file(other)


def _origin_file(origin: str) -> str:
    """A module:function origin as path.py:function, where the module is found here (from this folder, as a
    model spec's module is); any other origin as it is."""
    module, sep, function = origin.rpartition(":")
    if not sep or module.endswith(".py") or os.sep in module or "." in module:  # (a package's: finding it runs it)
        return origin
    try:  # found on the path, not imported: nothing of the user's runs
        found = importlib.machinery.PathFinder.find_spec(module, [os.getcwd(), *sys.path])
    except Exception:  # a path entry it cannot read: the origins are compared as written
        return origin
    return f"{Path(found.origin).resolve()}:{function}" if found is not None and found.origin else origin


def model_name(spec: str) -> str:
    """What rows call the model a spec loads: a zoo name, a file's stem, a function's name."""
    if spec in ZOO:
        return spec
    if spec.endswith((".pt2", ".onnx")):
        return Path(spec).stem
    return spec.rpartition(":")[2]


def attach_data(model: LoadedModel, setting: dict) -> None:
    """A recipe's [data.NAME] (eval, train: .npz paths) for the model: its own samples replace seeded
    ones (and the digits split, for digits_cnn)."""
    if setting.get("eval"):
        model.eval_data = load_data_set(setting["eval"], model.inputs, model.batch, model.name, "eval")
    if setting.get("train"):
        model.train_data = load_data_set(setting["train"], model.inputs, model.batch, model.name, "train")
        held_out = model.eval_data
        if held_out is not None and held_out.digest == model.train_data.digest:  # a variant would score what it learned
            raise HarnessError(f"the training data of {model.name} ({setting['train']}) is its held-out data "
                               f"({setting.get('eval') or 'the split it comes with'}): the same samples", "give held-out samples the variants do not "
                               "train on, or leave the training data out (int8 then calibrates on the held-out data, "
                               "and says so)")


def check_input_settings(models: list[LoadedModel], entries: dict[str, object]) -> None:
    """An [inputs] entry that fits no model is a typo, not a setting to ignore: an input name (an
    [inputs.NAME] setting) no model takes, or a model's table ([inputs.MODEL.NAME], a dict) that
    names no model or an input its model does not take."""
    names = {i.name for m in models for i in m.inputs}
    by_model = {m.name: {i.name for i in m.inputs} for m in models}
    for model, settings in sorted((k, v) for k, v in entries.items() if isinstance(v, dict)):
        if model not in by_model:
            raise HarnessError(f"[inputs.{model}] is a table of a model's inputs, and no model is called '{model}'; "
                               f"the models are {', '.join(sorted(by_model))}",
                               "name the model as rows call it (a zoo name, a file's stem or a function's name), "
                               f"or give shape or range in [inputs.{model}] for an input of that name")
        unknown = sorted(set(settings) - by_model[model])
        if unknown:
            raise HarnessError(f"[inputs.{model}] names {', '.join(repr(n) for n in unknown)}, which {model} does not "
                               f"take; its inputs are {', '.join(sorted(by_model[model]))}", "use those names (README: 'Models')")
    unknown = sorted(n for n, v in entries.items() if not isinstance(v, dict) and n not in names)
    if unknown:
        model = next((n for n in unknown if n in by_model), None)  # [inputs.MODEL] shape = ...: one table too few
        its = sorted(by_model.get(model, ()))
        raise HarnessError(f"[inputs] (or --input-shape/--input-range) names {', '.join(repr(n) for n in unknown)}, "
                           f"which no model takes; the models' inputs are {', '.join(sorted(names))}",
                           f"name one of {model}'s inputs ({', '.join(its)}): --input-shape {its[0]}=..., or in a recipe "
                           f"its own table, [inputs.{model}.{its[0]}]" if model else "use those names (README: 'Models')")


class ModelNotMade(HarnessError):
    """A model a spec names that its files or code cannot make: the file gone or unreadable, its module
    or an import of it failing, its function gone, raising or returning something else. The command's
    error where the model is all that is asked for; in a recipe of several it costs that model's rows,
    not the others' (a checkpoint moved overnight). A spec that names no model at all (an unknown zoo
    name, a .py without its function) stays a usage error before anything runs."""


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise ModelNotMade(f"model file not found: {path_text(path)}", RELATIVE_PATHS)
    return path


def _batch_notes(found: list[ModelInput], inputs: tuple[ModelInput, ...], settings: dict[str, dict]) -> list[str]:
    """A file's dynamic batch that no setting sized: built and measured at [measure] batch, said (a
    deployed module takes that batch alone)."""
    return [f"input '{i.name}' has a dynamic batch: built for batch {settled.shape[0]} ([measure] "
            f"batch; --input-shape {i.name}={sizes_text((8, *settled.shape[1:]))} builds for 8)"
            for i, settled in zip(found, inputs)
            if i.shape and isinstance(i.shape[0], str) and not (settings.get(i.name) or {}).get("shape")]


def _settle(where: str, found: list[ModelInput], settings: dict[str, dict], batch: int,
            fixed: bool) -> tuple[ModelInput, ...]:
    """The shapes measured. `found` may hold dynamic sizes (their names, as strings): a setting's
    shape fills them, a dynamic first size is the batch, any other is refused. A file's own static
    sizes are `fixed` (its graph is built for them); a torch module's may be reshaped. Every input
    left dynamic is named in one message; a size two inputs share (one symbol) must be given alike."""
    settled, unsized = [], []
    for i in found:
        setting = settings.get(i.name) or {}
        tables = {field: f"[{name}]" for field, name in (setting.get("tables") or {}).items()}  # for messages
        shape_table, range_table = (tables.get(field, f"[{toml_table('inputs', i.name)}]")
                                    for field in ("shape", "range"))
        shape = tuple(i.shape)
        if setting.get("shape"):
            asked = tuple(setting["shape"])
            if len(asked) != len(shape):
                raise HarnessError(f"{shape_table} shape {list(asked)} has {len(asked)} sizes, and input '{i.name}' "
                                   f"of {where} has {len(shape)} dimensions", f"give {len(shape)} sizes, the batch first")
            clash = [k for k, (a, d) in enumerate(zip(asked, shape)) if fixed and isinstance(d, int) and a != d]
            if clash:
                raise HarnessError(f"{shape_table} shape {list(asked)} changes sizes {where} fixes: input "
                                   f"'{i.name}' is {_shape_text(shape)}",
                                   "a file's static sizes are its graph's: export it at the sizes wanted, or with "
                                   "those dimensions dynamic")
            shape = asked
        elif shape and isinstance(shape[0], str):
            shape = (batch, *shape[1:])
        if any(isinstance(d, str) for d in shape):
            unsized.append((i.name, shape))
        value_range, range_from = i.value_range, i.range_from
        if setting.get("range"):
            if i.is_float:
                raise HarnessError(f"{range_table} range is for integer and bool inputs, and input '{i.name}' of "
                                   f"{where} is {i.dtype} (seeded standard normal)", f"drop the range of '{i.name}'")
            value_range, range_from = tuple(setting["range"]), GIVEN_RANGE
            if i.dtype == "bool":
                raise HarnessError(f"{range_table} range is for integer inputs, and input '{i.name}' of {where} "
                                   "is bool (seeded False or True)", f"drop the range of '{i.name}'")
            bounds = np.iinfo(i.dtype)
            if value_range[0] < bounds.min or value_range[1] > bounds.max:
                raise HarnessError(f"{range_table} range {list(value_range)} does not fit input '{i.name}' of "
                                   f"{where}, which is {i.dtype} ([{bounds.min}, {bounds.max}])",
                                   f"give a range within [{bounds.min}, {bounds.max}]")
            bound = i.value_range if i.range_from not in (None, FROM_EXAMPLE) else None  # a table's rows, a vocabulary
            if bound and (value_range[0] < bound[0] or value_range[1] > bound[1]):
                raise HarnessError(f"{range_table} range {list(value_range)} goes past [{bound[0]}, {bound[1]}] "
                                   f"({i.range_from}) that input '{i.name}' of {where} indexes, and TVM's lookups do not "
                                   "check bounds", f"give a range within [{bound[0]}, {bound[1]}]")
        settled.append(ModelInput(i.name, shape, i.dtype, value_range, range_from))
    if unsized:
        causes = [f"dimension {k} of input '{name}' of {where} is dynamic ('{d}')"
                  for name, shape in unsized for k, d in enumerate(shape) if isinstance(d, str)]
        sizes = {name: [d if isinstance(d, int) else "N" for d in shape] for name, shape in unsized}
        raise HarnessError(f"{'; '.join(causes)}, and TVM builds for fixed sizes: " + ", ".join(
                               f"input '{name}' is {_shape_text(shape)}" for name, shape in unsized),
                           f"give {'its' if len(unsized) == 1 else 'their'} sizes: " + ", ".join(
                               f"[{toml_table('inputs', name)}] shape = [{', '.join(map(str, s))}]" for name, s in sizes.items())
                           + " in the recipe, or " + " ".join(f"--input-shape {name}={sizes_text(s)}" for name, s in sizes.items()))
    _check_shared_sizes(where, found, settled)
    return tuple(settled)


def _check_shared_sizes(where: str, found: list[ModelInput], settled: list[ModelInput]) -> None:
    """A dynamic size two inputs share (token ids' and their mask's length, one symbol in the file)
    given two values would fail inside the engines, as an operator's shape error."""
    given: dict[str, tuple[str, int, int]] = {}  # symbol -> (input, dimension, size)
    for i, s in zip(found, settled):
        for k, (d, size) in enumerate(zip(i.shape, s.shape)):
            if not isinstance(d, str) or d == "?":  # "?": an ONNX size with no name, shared with none
                continue
            first = given.setdefault(d, (i.name, k, size))
            if first[2] != size:
                raise HarnessError(f"dimension {first[1]} of input '{first[0]}' and dimension {k} of input '{i.name}' of "
                                   f"{where} are one size ('{d}'), given as {first[2]} and {size}",
                                   "give them the same size")


def _shape_text(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _file_digest(path: Path, inputs: tuple[ModelInput, ...], static: bool, beside: list[Path] = ()) -> str:
    """The file's bytes (and those of the files `beside` it that hold its weights), and the sizes
    measured where the file leaves some open (one file at two batch sizes is two builds). A file whose
    shapes are all its own keeps its plain hash."""
    own = file_hash(path) if not beside else content_hash(file_hash(path), *(file_hash(f) for f in beside))
    if static:
        return own
    return content_hash(own, [i.signature() for i in inputs])


def onnx_weights_files(path: Path) -> list[Path]:
    """The files beside an .onnx that hold its weights (ONNX external data), none for most."""
    import onnx

    return _external_data(onnx.load(str(path), load_external_data=False), Path(path))


def _external_data(proto, path: Path) -> list[Path]:
    """The files an ONNX model keeps its weights in beside it (external data): retrained weights
    change them, not the .onnx."""
    from onnx.external_data_helper import uses_external_data

    locations = {entry.value for t in proto.graph.initializer if uses_external_data(t)
                 for entry in t.external_data if entry.key == "location"}
    missing = [location for location in sorted(locations) if not (path.parent / location).is_file()]
    if missing:
        raise ModelNotMade(f"{path} keeps its weights in {', '.join(missing)} (ONNX external data), and that is not "
                           f"beside it in {path.parent}", "keep the weights file next to the .onnx, as it was saved")
    return [path.parent / location for location in sorted(locations)]


def graph_inputs(graph) -> list:
    """An ONNX graph's inputs, less the initializers some exporters also list as inputs."""
    initializers = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in initializers]


def onnx_shapes(proto, inputs) -> dict[str, list[int]]:
    """TVM's ONNX importer's shape_dict: the graph's inputs at the shapes measured."""
    names = {i.name for i in graph_inputs(proto.graph)}
    return {i.name: list(i.shape) for i in inputs if i.name in names}


# What a torch.fx GraphModule, the module torch.export's program is rebuilt as, holds for itself
GRAPH_MODULE_NAMES = {"meta", "graph", "code", "shape_env", "recompile", "print_readable", "to_folder", "add_submodule",
                      "delete_submodule", "delete_all_unused_submodules"}


def _graph_module_clash(model: str, exported) -> tuple[str, str] | None:
    """(cause, fix) where an export's parameters, buffers or constants sit under a top-level name of
    those: PyTorch cannot rebuild a module from it then (ONNX's exporter and TVM's importer both do)."""
    clash = sorted({key.split(".")[0] for key in [*exported.state_dict, *exported.constants]} & GRAPH_MODULE_NAMES)
    if not clash:
        return None
    said = ", ".join(f"'{n}'" for n in clash)
    return (f"'{model}' has a top-level layer, parameter or buffer named {said}, a name torch.fx keeps for itself in the "
            "module an export is rebuilt as: PyTorch cannot rebuild the model from its export (nor can ONNX's exporter or "
            "TVM read it)",
            f"rename it in the model (self.{clash[0]} = ...: say self.{clash[0]}_net)")


def _load_zoo(name: str, cache_dir: Path, batch: int, settings: dict[str, dict]) -> LoadedModel:
    entry = ZOO[name]
    module, cache_hit = entry.factory(cache_dir)
    inputs = _settle(name, list(entry.inputs), settings, batch, fixed=False)
    behaviour = torch_behaviour(module)
    model = LoadedModel(name=name, source="zoo", inputs=inputs, digest=torch_digest(module, inputs, behaviour),
                        torch_module=module, cache_hit=cache_hit, notes=[entry.description], behaviour=behaviour)
    if name == "digits_cnn":
        if inputs[0].shape[1:] != (1, 8, 8):
            raise HarnessError(f"digits_cnn takes 8x8 images of one channel, not {_shape_text(inputs[0].shape)}",
                               "leave out the shape that sets digits_cnn's input ([inputs.input] or "
                               "[inputs.digits_cnn.input] in the recipe, or --input-shape)")
        x_train, y_train, x_test, y_test = digits_split()
        held, cut = fed_text(len(y_test), batch, "image")
        model.eval_data = data_set(f"scikit-learn digits, held-out split ({held}, labelled{cut})", (x_test,), y_test)
        model.train_data = data_set(f"scikit-learn digits, training split ({len(y_train)} images, labelled)", (x_train,),
                                    y_train)
    return model


def _load_pt2(path: Path, batch: int, settings: dict[str, dict]) -> LoadedModel:
    import torch

    ep = _load_exported(path)
    clash = _graph_module_clash(str(path), ep)
    if clash:
        raise ModelNotMade(clash[0], clash[1] + " and export it again", FAILED)
    module = ep.module()
    _check_float32(str(path), module)
    names = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    values = {n.name: n.meta["val"] for n in ep.graph.nodes if n.op == "placeholder"}
    kept = torch.utils._pytree.tree_leaves(ep.example_inputs) if ep.example_inputs else []
    examples = kept if len(kept) == len(names) else [None] * len(names)  # values where the program kept them
    found = []
    for name, example in zip(names, examples):
        value = values[name]
        if not isinstance(value, torch.Tensor):
            raise ModelNotMade(f"{path}: input '{name}' is not a tensor", "export a model whose inputs are all tensors")
        shape = tuple(d if isinstance(d, int) else str(d) for d in value.shape)  # a dynamic size by its symbol
        found.append(_model_input(name, value if example is None else example, shape, example is not None))
    inputs = _settle(str(path), found, settings, batch, fixed=True)
    _check_export_bounds(path, ep, [values[name] for name in names], inputs, settings)
    static = [i.shape for i in found] == [i.shape for i in inputs]
    # Dynamic sizes made fixed: the program is exported again at those sizes (TVM builds for fixed ones).
    return LoadedModel(name=model_name(str(path)), source="pt2", inputs=inputs, digest=_file_digest(path, inputs, static),
                       torch_module=module, exported=ep if static else None,
                       notes=[f"user ExportedProgram {path}" + _outputs_note(
                           sum(s.kind.name == "USER_OUTPUT" for s in ep.graph_signature.output_specs)),
                              *_batch_notes(found, inputs, settings)])


def _load_exported(path: Path):
    """torch.export.load, its cause said where it fails: torch logs why as a warning (an operator it
    cannot resolve) and raises a bare "check the warnings above"."""
    import re

    import torch
    import torch.ao.quantization.fx._decomposed  # noqa: F401  the quantized_decomposed ops PT2E-quantized programs hold

    causes: list[BaseException] = []

    class KeepCause(logging.Handler):
        def emit(self, record):
            if record.exc_info:
                causes.append(record.exc_info[1])

    log, keep = logging.getLogger("torch.export"), KeepCause()
    handlers, log.handlers = log.handlers, [keep]  # torch's own prints the traceback to stderr
    propagate, log.propagate = log.propagate, False
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return torch.export.load(str(path))
    except Exception as err:
        cause = causes[-1] if causes else err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        op = re.search(r"failed to resolve (\S+) to an operator", str(cause))
        if op:
            raise ModelNotMade(f"{path} holds the operator {op[1]}, which no library loaded here registers",
                               "give the model as path/to/file.py:function instead, whose imports register that operator "
                               "(its own library's), or export it without that operator") from None
        kind = _torch_file_kind(path)
        said = f"a {kind}, not an ExportedProgram" if kind else f"not a loadable ExportedProgram: {one_line(cause)}"
        raise ModelNotMade(f"{path} is {said}",
                           "save one with torch.export.save(torch.export.export(model, (x,)), 'model.pt2'), or give the "
                           "model as path/to/file.py:function") from None
    finally:
        log.handlers, log.propagate = handlers, propagate


def _torch_file_kind(path: Path) -> str | None:
    """What another PyTorch save is (both are zip archives as .pt2 is; torch calls either "corrupted"):
    TorchScript keeps its code, torch.save a pickle alone; None for anything else."""
    import zipfile

    try:
        names = zipfile.ZipFile(path).namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names):
        return "TorchScript file (torch.jit.save)"
    if any(n.endswith("/data.pkl") for n in names) and not any(n.endswith("/archive_format") for n in names):
        return "torch.save file (a state dict or a pickled module)"
    return None


def _check_export_bounds(path: Path, ep, values: list, inputs: tuple[ModelInput, ...], settings: dict[str, dict]) -> None:
    """A .pt2's dynamic size keeps the bounds it was exported with (torch.export.Dim("batch", max=16)),
    and its program's guards fail past them once run: sizes outside are refused before anything runs."""
    from torch.utils._sympy.numbers import int_oo

    for value, i in zip(values, inputs):
        for k, (dim, size) in enumerate(zip(value.shape, i.shape)):
            bounds = ep.range_constraints.get(getattr(getattr(dim, "node", None), "expr", None))
            if bounds is None or bounds.lower <= size <= bounds.upper:
                continue
            given = "--input-shape or [inputs]" if (settings.get(i.name) or {}).get("shape") else "[measure] batch"
            allowed = f"at least {bounds.lower}" if bounds.upper == int_oo else f"{bounds.lower} to {bounds.upper}"
            raise HarnessError(f"{path} was exported for sizes {allowed} in dimension {k} of input '{i.name}', and the "
                               f"sizes given for it ({given}: {i.name}={sizes_text(i.shape)}) put {size} there",
                               "give sizes within the bounds it was exported with, or export it again with wider ones "
                               "(torch.export.Dim's min and max)")


def _load_onnx(path: Path, batch: int, settings: dict[str, dict]) -> LoadedModel:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise ModelNotMade(f"{path} is not a readable ONNX model: {one_line(err)}", "check the file") from None
    from onnx.helper import tensor_dtype_to_np_dtype

    found, lookups = [], _lookup_ranges(proto.graph)
    for graph_input in graph_inputs(proto.graph):
        tensor = graph_input.type.tensor_type
        shape = tuple(d.dim_value if d.dim_value > 0 else (d.dim_param or "?") for d in tensor.shape.dim)
        dtype = np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type)).name
        value_range, range_from = lookups.get(graph_input.name, (None, None))  # else integers from {0, 1}
        found.append(ModelInput(graph_input.name, shape, dtype, value_range, range_from))
    inputs = _settle(str(path), found, settings, batch, fixed=True)
    static = [i.shape for i in found] == [i.shape for i in inputs]
    notes = [f"user ONNX model {path}" + _outputs_note(len(proto.graph.output)), *_batch_notes(found, inputs, settings)]
    if any(node.op_type == "DequantizeLinear" for node in proto.graph.node):  # QDQ: which layers TVM runs in int8
        from ..qdq import kernels_note

        notes.append(kernels_note(proto, onnx_shapes(proto, inputs))[1])
    return LoadedModel(name=model_name(str(path)), source="onnx", inputs=inputs,
                       digest=_file_digest(path, inputs, static, _external_data(proto, path)),
                       onnx_path=path.resolve(), notes=notes)


_SAME_VALUES = {"Cast", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}  # ops that move ids, not change them


def _lookup_ranges(graph) -> dict[str, tuple[tuple[int, int], str]]:
    """An ONNX file carries no example values, but an integer input that indexes a table of the graph's
    own (an embedding's Gather) must stay within its rows: that is the range it is seeded from."""
    import onnx

    rows = {t.name: t.dims[0] for t in graph.initializer if t.dims}
    readers: dict[str, list] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, position))
    ranges = {}
    for graph_input in graph_inputs(graph):
        tables, names = [], [graph_input.name]
        while names:
            for node, position in readers.get(names.pop(), []):
                if node.op_type in _SAME_VALUES and position == 0:
                    names += list(node.output)
                elif node.op_type == "Gather" and position == 1 and node.input[0] in rows and not any(
                        a.name == "axis" and onnx.helper.get_attribute_value(a) != 0 for a in node.attribute):
                    tables.append((rows[node.input[0]], node.input[0]))
        if tables:
            count, table = min(tables)
            ranges[graph_input.name] = ((0, count - 1), f"{table}'s {count} rows")
    return ranges


def _model_input(name: str, example, shape: tuple, known_values: bool) -> ModelInput:
    """A float example is fed as float32 (the harness's fp32 baseline); an integer or bool one keeps
    its dtype, and seeded inputs stay within the example's values (indices must stay in range)."""
    dtype = str(example.dtype).removeprefix("torch.")
    if 0 in shape:  # nothing to time nor compare: every figure would be of no sample
        raise ModelNotMade(f"input '{name}' of the example is {list(shape)}: a size of 0 holds no value",
                           "give an example of at least one sample in every dimension")
    if example.is_floating_point():
        return ModelInput(name, shape, "float32")
    if example.is_complex():
        raise ModelNotMade(f"input '{name}' is {dtype}; the engines take float, integer and bool inputs",
                           "give the model real-valued inputs")
    if not (known_values and example.numel()):
        return ModelInput(name, shape, dtype)
    return ModelInput(name, shape, dtype, (int(example.min()), int(example.max())), FROM_EXAMPLE)


def _outputs_note(count: int) -> str:
    """Every output is checked against the baseline, but accuracy and top-1 read only the first."""
    return (f" (returns {count} outputs: every one is checked against the baseline; accuracy and top-1 "
            "agreement read the first)" if count > 1 else "")


def _count_outputs(spec: str, net, examples: tuple) -> int:
    """How many outputs forward returns; one that is not a tensor (None, a Python number), which
    neither export nor TVM can return, is refused by its place."""
    import torch

    try:
        with torch.no_grad():
            out = net(*examples)
    except Exception:  # the baseline's own run reports it, as a row
        return 1
    leaves = output_leaves(out, torch.Tensor)
    for k, leaf in enumerate(leaves):
        if not isinstance(leaf, torch.Tensor):
            raise ModelNotMade(f"'{spec}' returns {'None' if leaf is None else 'a Python ' + type(leaf).__name__} as its "
                               f"output {k + 1} of {len(leaves)}; a deployed model returns tensors only",
                               "return tensors alone from forward (leave the None out, or return torch.tensor(value))")
    return len(leaves)


_MODEL_FOLDERS: set[str] = set()  # folders of model files whose imports were given the files beside them
_MISSING = object()


def _required_parameters(function) -> list[str]:
    """The parameters a call with no arguments leaves without a value (none where it cannot tell)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin or a C function: let the call say
        return []
    return [p.name for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                                            p.KEYWORD_ONLY)]


def _files_beside(file: Path) -> str:
    """A model file's imports find the files beside it, as `python file.py`'s do: its folder (returned)
    goes first on sys.path while it is imported (_first_on_path), and a module of a model file's folder
    imported before is forgotten: another folder's utils.py would run in place of this one's, and this
    folder's own, edited since (a notebook loads the model again), would run as it was while the digest
    names it as it is."""
    folder = str(file.resolve().parent)
    _MODEL_FOLDERS.add(folder)
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if name != "__main__" and origin and str(Path(origin).resolve().parent) in _MODEL_FOLDERS:
            del sys.modules[name]  # an earlier model keeps the module it imported; a new import reads the file now
    return folder


@contextlib.contextmanager
def _first_on_path(folder: str):
    """A model's folder first on sys.path while its file is imported; then where it was (a script's own
    folder stays first), or last, where an import of a file beside it from inside the model still finds
    it, but a file there named as a package this process imports later (an onnx.py beside the model)
    does not take that package's place."""
    was = sys.path.index(folder) if folder in sys.path else None
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)  # the first: the one put there (the model's code may have added more)
        if was is None:
            sys.path.append(folder)


def _load_python(spec: str, settings: dict[str, dict]) -> LoadedModel:
    import torch

    target, func_name = spec.rpartition(":")[0], model_name(spec)
    _import_torchvision()  # a user's model file may build on torchvision's, which cannot import plainly here
    try:
        if target.endswith(".py"):
            file = _existing(Path(target))
            with _first_on_path(_files_beside(file)):
                mod_spec = importlib.util.spec_from_file_location(file.stem, file)
                module = importlib.util.module_from_spec(mod_spec)
                mod_spec.loader.exec_module(module)
        elif os.getcwd() in sys.path:  # `python -m tvmharness` put it there, as `python -m` does
            module = importlib.import_module(target)
        else:  # as `python -m` finds a module beside you; the console script would not
            with _first_on_path(os.getcwd()):
                module = importlib.import_module(target)
    except HarnessError:
        raise
    except ModuleNotFoundError as err:
        if not err.name or not (target == err.name or target.startswith(err.name + ".")):  # a module it imports
            raise ModelNotMade(f"could not make model '{spec}': {one_line(err)}",
                               f"install the package it imports ({err.name})") from None
        raise ModelNotMade(f"could not make model '{spec}': no module '{target}' here ({os.getcwd()}) or installed",
                           f"give the file instead (path/to/{target.replace('.', '/')}.py:{func_name}), or run from "
                           "the folder that holds it") from None
    except Exception as err:  # the user's code raised: a model that fails (exit 1), not a spec mistyped
        raise ModelNotMade(f"could not import '{target}' for model '{spec}': {type(err).__name__}: {one_line(err)}",
                           "fix what it raised; TVMHARNESS_DEBUG=1 shows the traceback", exit_code=FAILED) from err
    function = getattr(module, func_name, _MISSING)
    if not callable(function):
        functions = sorted(n for n, f in vars(module).items() if inspect.isfunction(f) and f.__module__ == module.__name__
                           and not n.startswith("_") and not _required_parameters(f))
        found = (f"'{target}' has '{func_name}' of type {type(function).__name__}, not a function" if function is not _MISSING
                 else f"'{spec}' names no function after its colon" if not func_name
                 else f"'{target}' has no function '{func_name}'")
        raise ModelNotMade(f"could not make model '{spec}': {found}",
                           "name the function that returns (nn.Module, example)"
                           + (f"; {target} has {', '.join(functions)}" if functions else ""))
    if needed := _required_parameters(function):
        raise ModelNotMade(f"could not make model '{spec}': {func_name}() needs {', '.join(needed)}; tvmharness calls it "
                           "with no arguments", "give its parameters defaults, or name a function without parameters that calls it with them")
    try:
        made = function()
    except HarnessError:
        raise
    except Exception as err:
        raise ModelNotMade(f"could not make model '{spec}': {func_name}() raised {type(err).__name__}: {one_line(err)}",
                           "fix what it raised; TVMHARNESS_DEBUG=1 shows the traceback", exit_code=FAILED) from err
    if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module)):
        pair = isinstance(made, tuple) and len(made) == 2  # a pair of the wrong things: say which
        raise ModelNotMade(f"'{spec}' returned " + (f"a {type(made[0]).__name__} as its first item, not an nn.Module"
                                                    if pair else f"{type(made).__name__}, not (nn.Module, example)"),
                           "return the module and its example input: one tensor, or a tuple of tensors")
    net, example = made
    examples = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    if not examples or not all(isinstance(e, torch.Tensor) for e in examples):
        what = ", ".join(type(e).__name__ for e in examples) or "nothing"
        raise ModelNotMade(f"'{spec}' gave {what} as its example; the engines take tensors, one per input of forward",
                           "return one example tensor, or a tuple of tensors in forward's order (no dicts or keywords)")
    # measured as deployed: dropout off, batch norm on its running statistics (said: its training-mode outputs differ)
    trained = ("; it came in training mode and is measured in eval mode (model.eval()), as it is deployed"
               if any(m.training for m in net.modules()) else "")
    net.eval()
    _check_not_torch_quantized(spec, net)
    _check_float32(spec, net)
    names = _forward_names(net, len(examples))
    found = [_model_input(name, e, tuple(e.shape), True) for name, e in zip(names, examples)]
    inputs = _settle(spec, found, settings, batch=1, fixed=False)  # batch: unused, an example has no dynamic size
    behaviour = torch_behaviour(net)  # (before _count_outputs runs it)
    return LoadedModel(name=func_name, source="python", inputs=inputs, digest=torch_digest(net, inputs, behaviour),
                       torch_module=net, notes=[f"user model {spec}" + _outputs_note(_count_outputs(spec, net, examples))
                                                + trained],
                       behaviour=behaviour)


def _check_not_torch_quantized(spec: str, module) -> None:
    """PyTorch's own quantized layers (torch.ao quantize_dynamic, convert_fx, their reference modules)
    run PyTorch's kernels: they export to neither TVM nor ONNX. Refused by name, with the ways that do."""
    quantized = sorted({f"{type(m).__module__.split('.modules')[0]}.{type(m).__name__}" for m in module.modules()
                        if not type(m).__name__.endswith("PackedParams")  # a quantized layer's storage, not a layer
                        and type(m).__name__ != "FloatFunctional"  # float skip-adds of models made ready to quantize
                        and type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized",
                                                          "torch.nn.quantized"))})
    if quantized:
        raise ModelNotMade(f"'{spec}' is quantized by PyTorch ({', '.join(quantized[:3])}{', ...' if len(quantized) > 3 else ''});"
                           " its quantized layers are PyTorch's own kernels, which export to neither TVM nor ONNX",
                           "give the float model and measure its int8 as a variant (--variant int8: TVM's integer kernels "
                           "and ONNX Runtime's), or quantize its ONNX export with onnxruntime.quantization "
                           "(quantize_static, QDQ format) and give that .onnx file")


def _check_float32(spec: str, module) -> None:
    """Float inputs are fed as float32, to the fp32 baseline: a model of other float weights is refused
    (its first layer would raise on them), and lower precisions are its variants."""
    import torch

    other = next(((name, p.dtype) for name, p in module.named_parameters()
                  if p.is_floating_point() and p.dtype != torch.float32), None)
    if other is not None:
        dtype = str(other[1]).removeprefix("torch.")
        raise ModelNotMade(f"'{spec}' holds {dtype} weights ({other[0]}); tvmharness measures a float32 model, "
                           "fed float32, against its float32 PyTorch baseline, and makes lower precisions as variants",
                           "give the model in float32 (model.float(), and a float32 example), and measure its half "
                           "precision as a variant: --variant fp16, or variants = [\"fp16\"] in the recipe")


def _forward_names(net, count: int) -> list[str]:
    """forward's parameter names, which the ONNX export and the artifact's manifest name inputs by."""
    import inspect

    try:
        names = [p.name for p in inspect.signature(net.forward).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        names = []
    return names[:count] if len(names) >= count else [f"input{k}" for k in range(count)]

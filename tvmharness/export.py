"""A PyTorch model as files other processes and engines read: one ONNX file (ONNX Runtime, TVM's ONNX
frontend, int8's quantizer) and a .pt2 ExportedProgram (PyTorch in a process of its own), cached."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

from .cache import content_hash, intact, short_name, stage_dir, torch_write_failed, written_whole
from .errors import FAILED, HarnessError, one_line
from .models import LoadedModel

# Bump when what reaches TVM or ONNX Runtime from a model changes (e.g. batch-norm folding, the
# integer rewrite of QDQ models), so the cached exports and builds keyed by it are redone.
IMPORT_VERSION = 6  # 5: QDQ scales and zero points as tensors (qdq.VERSION 3); 6: integer conv1d (qdq.VERSION 4)
# Bump when only the ONNX export changes (what ONNX Runtime reads), so TVM's builds are kept.
EXPORT_VERSION = 3  # 2: an output that is an input has a name of its own; 3: outputs named as torch.export flattens them


def onnx_file(model: LoadedModel, cache_dir: Path) -> tuple[Path, bool | None]:
    """The model as one self-contained .onnx file (cached by the model's digest): (path, cache_hit),
    cache_hit None for a model that is an ONNX file already (the user's, an int8 variant's): no export, no cache."""
    if model.onnx_path is not None:
        return model.onnx_path, None
    import torch

    path = stage_dir(cache_dir, "onnx", content_hash("onnx", model.digest, torch.__version__, IMPORT_VERSION, EXPORT_VERSION)) / f"{short_name(model.name)}.onnx"
    if intact(path):
        return path, True
    ep = model.exported_program()
    try:
        # The exporter prints its steps; keep the harness's own progress readable.
        with written_whole(path, checked=True) as partial, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(ep, (), str(partial), dynamo=True, external_data=False,
                              input_names=[i.name for i in model.inputs], output_names=model.output_names(), verbose=False)
            _outputs_apart_from_inputs(partial)
    except OSError as err:  # the cache's folder, not the model: read-only, full
        raise HarnessError(f"cannot write model '{model.name}''s ONNX export to {path.parent}: {err.strerror or err}",
                           "free space there or make it writable, or give another --output-dir", FAILED) from None
    except Exception as err:
        raise HarnessError(f"model '{model.name}' does not export to ONNX: {_export_cause(err)}",
                           "use engines without onnxruntime, or fix the unsupported operator", FAILED) from None
    return path, False


def _outputs_apart_from_inputs(path: Path) -> None:
    """A model that returns an input as it came (`return x, self.head(x)`) exports as an Identity
    node that defines the input's name again, which ONNX Runtime refuses ("Duplicate definition of
    name"): such an output gets a name of its own."""
    import onnx

    proto = onnx.load(str(path))
    graph = proto.graph
    taken = {i.name for i in graph.input} | {o for node in graph.node for o in node.output} | {i.name for i in graph.initializer}
    inputs = {i.name for i in graph.input}
    renamed = False
    for output in graph.output:
        if output.name not in inputs:
            continue
        name, k = f"{output.name}_out", 1
        while name in taken:
            k += 1
            name = f"{output.name}_out{k}"
        taken.add(name)
        for node in graph.node:  # the exporter's own Identity(x) -> x, which defined the input again
            if node.op_type == "Identity" and list(node.input) == [output.name] and list(node.output) == [output.name]:
                graph.node.remove(node)
                break
        graph.node.append(onnx.helper.make_node("Identity", [output.name], [name]))
        output.name = name
        renamed = True
    if renamed:
        onnx.save(proto, str(path))


def pt2_file(model: LoadedModel, cache_dir: Path) -> Path:
    """The model's ExportedProgram saved as a .pt2 (cached by the model's digest): what a process of
    its own loads to run the model in PyTorch."""
    import torch

    path = stage_dir(cache_dir, "pt2", content_hash("pt2", model.digest, torch.__version__)) / f"{short_name(model.name)}.pt2"
    if not intact(path):
        try:
            with written_whole(path, checked=True) as partial:
                torch.export.save(model.exported_program(), str(partial))
        except (OSError, RuntimeError) as err:
            if not torch_write_failed(err):
                raise
            raise HarnessError(f"cannot write model '{model.name}''s .pt2 export to {path.parent} (is the disk full?): "
                               f"{one_line(err)}",
                               "free space there or make it writable, or give another --output-dir", FAILED) from None
    return path


def _export_cause(err: Exception) -> str:
    """torch.onnx's error leads with its own next steps; the cause is under "## Exception summary"."""
    summary = str(err).partition("## Exception summary")[2].strip()
    return one_line(re.sub(r"^<class '[^']+'>: ", "", summary.splitlines()[0]) if summary else err)

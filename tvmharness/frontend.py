"""Models into TVM: torch.export -> Relax, or ONNX -> Relax; and torch -> ONNX for ONNX Runtime."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

from .cache import content_hash, short_name, stage_dir, written_whole
from .errors import FAILED, HarnessError, one_line
from .models import LoadedModel, onnx_shapes, quiet_treespec

# Bump when what reaches TVM or ONNX Runtime from a model changes (e.g. batch-norm folding, the
# integer rewrite of QDQ models), so the cached exports and builds keyed by it are redone.
IMPORT_VERSION = 5  # 5: QDQ scales and zero points as tensors (qdq.VERSION 3)
# Bump when only the ONNX export changes (what ONNX Runtime reads), so TVM's builds are kept.
EXPORT_VERSION = 2  # 2: an output that is an input has a name of its own


def onnx_file(model: LoadedModel, cache_dir: Path) -> tuple[Path, bool | None]:
    """The model as one self-contained .onnx file (cached by the model's digest): (path, cache_hit),
    cache_hit None for a model that is an ONNX file already (the user's, an int8 variant's): no export, no cache."""
    if model.onnx_path is not None:
        return model.onnx_path, None
    import torch

    path = stage_dir(cache_dir, "onnx", content_hash("onnx", model.digest, torch.__version__, IMPORT_VERSION, EXPORT_VERSION)) / f"{short_name(model.name)}.onnx"
    if path.is_file():
        return path, True
    ep = model.exported_program()
    try:
        # The exporter prints its steps; keep the harness's own progress readable.
        with written_whole(path) as partial, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(ep, (), str(partial), dynamo=True, external_data=False,
                              input_names=[i.name for i in model.inputs], verbose=False)
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
    if not path.is_file():
        with written_whole(path) as partial:
            torch.export.save(model.exported_program(), str(partial))
    return path


def _export_cause(err: Exception) -> str:
    """torch.onnx's error leads with its own next steps; the cause is under "## Exception summary"."""
    summary = str(err).partition("## Exception summary")[2].strip()
    return one_line(re.sub(r"^<class '[^']+'>: ", "", summary.splitlines()[0]) if summary else err)


def frontend_for(model: LoadedModel, asked: str) -> str:
    """The frontend a model reaches TVM through: an ONNX file (the user's, an int8 variant) has only
    the one way in, and a variant may need one (fp16: onnx), whatever was asked."""
    return model.frontend or ("onnx" if model.torch_module is None else asked)


def to_relax(model: LoadedModel, frontend: str, cache_dir: Path):
    """The model as a Relax IRModule with weights bound as constants."""
    frontend = frontend_for(model, frontend)
    try:
        if frontend == "onnx":
            import onnx
            from tvm.relax.frontend.onnx import from_onnx

            path, _ = onnx_file(model, cache_dir)
            proto = onnx.load(str(path))
            from .qdq import integer_qdq

            mod = from_onnx(proto, shape_dict=onnx_shapes(proto, model.inputs), keep_params_in_input=False)
            return integer_qdq(mod)[0]  # quantized (QDQ) models get integer conv/matmul kernels
        from tvm.relax.frontend.torch import from_exported_program

        with quiet_treespec():
            return from_exported_program(model.exported_program(), unwrap_unit_return_tuple=False)
    except HarnessError:
        raise
    except Exception as err:  # the frontends raise assorted errors for unsupported operators
        from .qdq import TVM_QUANTIZED_FIX, is_quantized_op

        # A valid model TVM cannot take in: the build failed (exit 1), not the command line (2).
        other = "onnx" if frontend == "torch" else "torch"
        # a torch model may go the other way; an ONNX file or variant (int8, fp16) has only this one
        instead = (f", or try the {other} frontend (--frontend {other}, or frontend = \"{other}\" in the recipe)"
                   if model.torch_module is not None and model.frontend is None else "")
        unsupported = re.search(r"not supported for frontend ONNX: (.*)", str(err))
        ops = sorted(unsupported.group(1).split(", ")) if unsupported else []
        quantized, others = [op for op in ops if is_quantized_op(op)], [op for op in ops if not is_quantized_op(op)]
        if quantized:  # a file quantized otherwise than TVM imports (QOperator format, dynamic on convs): not to replace by hand
            nor = f" (nor these, not quantized ones: {', '.join(others)})" if others else ""
            raise HarnessError(f"'{model.name}' is quantized with operators TVM's Relax onnx frontend does not import: "
                               f"{', '.join(quantized)}{nor}",
                               TVM_QUANTIZED_FIX + ("; replace the others" if others else ""), FAILED) from None
        match = re.search(r"Unsupported function types \[(.*?)\]", str(err))
        if match:
            raise HarnessError(f"'{model.name}' uses operators TVM's Relax {frontend} frontend does not support: "
                               f"{match.group(1)}", f"replace those operators in the model{instead}", FAILED) from None
        raise HarnessError(f"TVM's {frontend} frontend cannot import '{model.name}': {one_line(err)}",
                           f"an operator is likely unsupported by TVM's Relax frontend: replace it{instead}",
                           FAILED) from None

"""Models into TVM: torch.export -> Relax, or ONNX -> Relax."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import FAILED, HarnessError, one_line
from .export import onnx_file
from .models import LoadedModel, onnx_shapes, quiet_treespec


def frontend_for(model: LoadedModel, asked: str) -> str:
    """The frontend a model reaches TVM through: an ONNX file (the user's, an int8 variant) has only
    the one way in, and a variant may need one (fp16: onnx), whatever was asked."""
    return model.frontend or ("onnx" if model.torch_module is None else asked)


def known_faults(model: LoadedModel, frontend: str) -> str:
    """What TVM 0.27 is known to compute wrongly in this model through this frontend, said where a TVM
    build disagrees with the baseline ("" where nothing is known)."""
    from torch import nn

    recurrent = sorted({type(m).__name__ for m in model.torch_module.modules() if isinstance(m, (nn.LSTM, nn.GRU))}
                       ) if frontend_for(model, frontend) == "torch" else []
    if recurrent:  # (a GRU's final state and its last step's output come out wrong, batch_first or not)
        return (f"this model has {' and '.join(recurrent)}: TVM 0.27's torch frontend computes nn.LSTM and nn.GRU "
                "wrongly, and its onnx frontend has neither; measure this model on torch and onnxruntime")
    return ""


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

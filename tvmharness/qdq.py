"""Integer kernels for quantized (QDQ) ONNX models in TVM, and which quantized operators TVM imports.

TVM 0.27's ONNX frontend imports QuantizeLinear/DequantizeLinear, and they legalize to plain TIR:
a QDQ model runs dequantize -> fp32 conv/matmul -> quantize, with int8 storage and no integer
arithmetic. This Relax rewrite turns each conv1d / conv2d / matmul whose inputs are a dequantized activation
and a dequantized constant weight into an integer operation on the quantized values (uint8/int8 x
int8, int32 accumulation) followed by one float rescale (activation scale x per-channel weight
scale) that the following bias add and quantize fuse into:

    conv2d(dequant(xq, sx, zx), dequant(Wq, sw, 0))
      = sx * sw[oc] * (conv2d_int32(pad(xq, zx), Wq) - zx * sum(Wq[oc]))

The activation is padded with its zero point (so padding means the real value 0) and the zero point
correction is a per-channel constant. Operators that do not match (other layouts, a weight zero
point, a non-constant weight) stay as they were: dequantize -> fp32, and are counted as such.

Every per-tensor scale and zero point then becomes a one-element tensor, which the kernels read as an
argument: a scalar would be compiled into its kernel as a literal, so each layer's calibration would be
part of its MetaSchedule workload, and int8 recalibrated on other data, or a retrained model, would
find none of its tuning records (nor would two layers of one shape share a task). Only the zero point
an activation is padded with stays a literal (pad's value is an attribute), and it is 0 after a ReLU."""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field

import numpy as np

from .errors import one_line

# Operators TVM's Relax ONNX frontend (0.27) cannot import from a dynamically quantized model: the
# dynamic int8 variant leaves them fp32 so that one model runs on every engine.
TVM_UNSUPPORTED_INTEGER_OPS = {"Conv": "ConvInteger"}
# What dynamic quantization may quantize for TVM (the int8:dynamic variant's, and the fix named for a file that has the others)
TVM_DYNAMIC_OP_TYPES = [op for op in ("MatMul", "Gemm", "Conv") if op not in TVM_UNSUPPORTED_INTEGER_OPS]
# How to quantize an ONNX model that TVM imports: the fix for a file whose quantized operators it cannot import
TVM_QUANTIZED_FIX = ("quantize it in QDQ format (quantize_static(..., quant_format=QuantFormat.QDQ), which TVM builds with "
                     f"integer kernels here), or dynamically with op_types_to_quantize={json.dumps(TVM_DYNAMIC_OP_TYPES)}; "
                     "or give the fp32 model and measure --variant int8 (or int8:dynamic)")

VERSION = 4  # 2: MatMul weights stored (in, out), on N-D inputs (Linear layers of transformers); 3: singleton qparams; 4: conv1d
# The convolutions rewritten to integer kernels, with the layouts they take (ONNX's)
CONV_LAYOUTS = {"conv1d": ("NCW", "OIW"), "conv2d": ("NCHW", "OIHW")}
# Compute on a dequantized activation that no integer kernel here takes: it stays fp32, and is said so
OTHER_COMPUTE = ("conv3d", "conv1d_transpose", "conv2d_transpose", "conv3d_transpose")


@dataclass
class RewriteReport:
    integer: dict = field(default_factory=dict)  # op -> count rewritten to integer kernels
    float_fallback: dict = field(default_factory=dict)  # op -> count left dequantize -> fp32, with why

    def as_dict(self) -> dict:
        return {"integer": self.integer, "float_fallback": self.float_fallback, "version": VERSION}


def integer_qdq(mod):
    """(rewritten module, RewriteReport). A module without dequantize comes back unchanged."""
    from tvm import relax
    from tvm.ir.expr import Constant

    report = RewriteReport()
    if "R.dequantize" not in mod.script(show_meta=False):
        return mod, report

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            name = getattr(call.op, "name", "")
            kind = name.removeprefix("relax.nn.").removeprefix("relax.")
            if kind not in CONV_LAYOUTS and kind != "matmul" and kind not in OTHER_COMPUTE:
                return call
            try:
                if kind in OTHER_COMPUTE:
                    self._dequantized(call.args[0])  # (not quantized: no fallback to name)
                    raise _NoMatch(f"no integer kernel for {kind} (only for {', '.join([*CONV_LAYOUTS, 'matmul'])})")
                new = self._rewrite(call, kind)
            except _NoMatch as why:
                if why.counted:
                    report.float_fallback[f"{kind}: {why}"] = report.float_fallback.get(f"{kind}: {why}", 0) + 1
                return call
            report.integer[kind] = report.integer.get(kind, 0) + 1
            return new

        def _dequantized(self, expr):
            """(quantized input, scale ndarray, zero point ndarray, axis) of a dequantize binding."""
            bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
            if not (isinstance(bound, relax.Call) and getattr(bound.op, "name", "") == "relax.dequantize"):
                raise _NoMatch("input is not dequantized", counted=False)
            q, scale, zp = bound.args
            if not (isinstance(scale, Constant) and isinstance(zp, Constant)):
                raise _NoMatch("scale or zero point is not a constant")
            return q, scale.value.numpy(), zp.value.numpy(), int(bound.attrs.axis)

        def _weight(self, expr, matmul: bool):
            """(int8 weight with output channels first, per-channel scale). A matmul's weight is
            (in, out): a Gemm's (out, in) constant transposed, or a MatMul's (in, out) constant as
            the exporter stores it for a Linear layer on N-D inputs (output channels on axis 1)."""
            bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
            out_axis = 0
            if matmul:
                if isinstance(bound, relax.Call) and getattr(bound.op, "name", "") == "relax.permute_dims":
                    expr = bound.args[0]
                else:
                    out_axis = 1
            q, scale, zp, axis = self._dequantized(expr)
            if not isinstance(q, Constant):
                raise _NoMatch("both inputs are activations (e.g. attention scores), not an activation and a weight")
            if str(q.value.dtype) != "int8" or (matmul and q.value.numpy().ndim != 2):
                raise _NoMatch("weight is not an int8 constant matrix" if matmul else "weight is not an int8 constant")
            if np.any(zp != 0) or (scale.size > 1 and axis != out_axis):
                raise _NoMatch("weight has a zero point or is not quantized per output channel")
            wq = q.value.numpy()
            return (wq.T if out_axis == 1 else wq), scale.astype(np.float32)

        def _rewrite(self, call, kind):
            xq, sx, zx, _ = self._dequantized(call.args[0])
            if sx.size != 1 or zx.size != 1:
                raise _NoMatch("activation is not quantized per tensor")
            dtype = str(xq.ty.dtype)
            if dtype not in ("uint8", "int8"):
                raise _NoMatch(f"activation is {dtype}")
            zx = int(zx.reshape(-1)[0])
            if kind in CONV_LAYOUTS:
                wq, sw = self._weight(call.args[1], matmul=False)
                attrs = call.attrs
                data_layout, kernel_layout = CONV_LAYOUTS[kind]
                if attrs.data_layout != data_layout or attrs.kernel_layout != kernel_layout:
                    raise _NoMatch(f"layout is not {data_layout}/{kernel_layout}")
                padding = [int(p) for p in attrs.padding]  # conv1d: left, right; conv2d: top, left, bottom, right
                spatial = len(padding) // 2
                data = xq
                if any(padding):  # pad's widths: (before, after) of each axis, the spatial ones last
                    widths = [0, 0, 0, 0] + [w for axis in range(spatial) for w in (padding[axis], padding[axis + spatial])]
                    data = self.builder_.emit(relax.op.nn.pad(xq, widths, pad_value=float(zx)))
                conv = relax.op.nn.conv2d if kind == "conv2d" else relax.op.nn.conv1d
                acc = self.builder_.emit(conv(
                    data, relax.const(wq), strides=attrs.strides, padding=0, dilation=attrs.dilation,
                    groups=attrs.groups, data_layout=data_layout, kernel_layout=kernel_layout, out_dtype="int32"))
                shape = (1, -1) + (1,) * spatial
                wsum = wq.astype(np.int64).sum(axis=tuple(range(1, wq.ndim)))
            else:
                wq, sw = self._weight(call.args[1], matmul=True)  # (out, in), used transposed
                acc = self.builder_.emit(relax.op.matmul(xq, relax.const(np.ascontiguousarray(wq.T)), out_dtype="int32"))
                shape = (1, -1)
                wsum = wq.astype(np.int64).sum(axis=1)
            if zx:
                correction = relax.const((zx * wsum).astype(np.int32).reshape(shape))
                acc = self.builder_.emit(relax.op.subtract(acc, correction))
            scale = (float(sx.reshape(-1)[0]) * sw.reshape(-1)).astype(np.float32).reshape(shape)
            out = relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale))
            return out

    @relax.expr_functor.mutator
    class Singletons(relax.PyExprMutator):
        """A per-tensor scale or zero point as a one-element tensor, not a scalar: TVM inlines a scalar
        constant into the kernel as a literal, making each layer's calibration part of its workload."""

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", "") not in ("relax.quantize", "relax.dequantize"):
                return call
            data, *qparams = call.args
            if not all(isinstance(q, Constant) and q.value.numpy().ndim == 0 for q in qparams):
                return call
            singletons = [relax.const(q.value.numpy().reshape(1)) for q in qparams]
            return relax.Call(call.op, [data, *singletons], call.attrs, call.ty_args, call.span)

    def each_function(mutator_class, mod):
        mutator = mutator_class(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gvar, mutator.visit_expr(func))
        return mutator.builder_.get()

    mod = each_function(Rewriter, mod)
    mod = each_function(Singletons, relax.transform.DeadCodeElimination()(mod))
    return mod, report


def integer_kernels(proto, shape_dict: dict[str, list[int]]) -> dict:
    """Which operators TVM's integer rewrite of this QDQ ONNX model runs in int8, and which stay fp32 (and why)."""
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(proto, shape_dict=shape_dict, keep_params_in_input=False)
    return integer_qdq(mod)[1].as_dict()


def kernels_note(proto, shape_dict: dict[str, list[int]]) -> tuple[dict | None, str]:
    """(integer_kernels' report, None where TVM cannot import the model; the note that says it): how many
    layers run integer kernels on TVM, and which fall back to dequantize -> fp32 and why."""
    try:
        kernels = integer_kernels(proto, shape_dict)
    except Exception as err:  # ONNX Runtime's rows need none of it; TVM's rows say why they failed
        return None, f"on TVM: its ONNX importer could not read the int8 model ({one_line(err)}); the TVM rows say so"
    return kernels, (f"on TVM: integer kernels (uint8 x int8 -> int32, one float rescale) for {_counts_text(kernels['integer'])}"
                     + (f"; dequantize -> fp32 fallback for {_counts_text(kernels['float_fallback'])}" if kernels["float_fallback"] else ""))


def _counts_text(counts: dict[str, int]) -> str:
    """{"conv2d": 2, "matmul: why": 1} as a note says it: "2 conv2d, 1 matmul: why"."""
    return ", ".join(f"{n} {op}" for op, n in counts.items()) or "none"


class _NoMatch(Exception):
    def __init__(self, why: str, counted: bool = True):
        super().__init__(why)
        self.counted = counted


def is_quantized_op(op_type: str) -> bool:
    """An operator only a quantized ONNX model has: QDQ's QuantizeLinear/DequantizeLinear, the QOperator
    format's QLinear*, QGemm, QAttention, dynamic quantization's DynamicQuantize* and *Integer ops."""
    return (op_type in ("QuantizeLinear", "DequantizeLinear") or op_type.startswith("DynamicQuantize")
            or "Integer" in op_type or (op_type[:1] == "Q" and op_type[1:2].isupper()))  # QLinearConv, QGemm; not QuickGelu


def quantized_ops(graph) -> dict[str, int]:
    """The quantized operators of an ONNX graph, counted: none for an fp32 model."""
    return dict(collections.Counter(n.op_type for n in graph.node if is_quantized_op(n.op_type)))

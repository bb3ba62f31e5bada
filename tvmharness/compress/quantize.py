"""Quantization: fp16 (PyTorch casts; float in, float out) and int8 post-training quantization with
ONNX Runtime's quantizer, static (QDQ: per-channel int8 weights, per-tensor activations calibrated on
real inputs with MinMax, Entropy or Percentile) or dynamic. An int8 variant is an ONNX model, run by
ONNX Runtime and by TVM through its ONNX frontend."""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ..cache import content_hash, file_hash, intact, short_name, stage_dir, written_whole
from ..data import DataSet, Feed, ModelInput, feed_dict, random_feeds
from ..errors import HarnessError, counted, one_line
from ..measure import exact_output
from ..models import LoadedModel, graph_inputs, onnx_shapes, onnx_weights_files, torch_digest
from ..qdq import TVM_DYNAMIC_OP_TYPES, TVM_UNSUPPORTED_INTEGER_OPS, is_quantized_op, quantized_ops
from .base import NotApplicable, Technique, Work
from .prune import finalize_pruning



# How far two engines' runs of one quantized model may differ, relative to the largest output:
# engines round differently (integer requantization vs float), and one activation step that flips
# moves the outputs by a few output steps (1/255 of the range for 8 bits). fp16 keeps ~3 digits, and
# TVM accumulates fp16 convolutions in fp16 where PyTorch and ONNX Runtime accumulate in fp32: on
# resnet18 that is 0.7% of the largest output.
INT8_TOLERANCE = 0.02
FP16_TOLERANCE = 0.01
QUANTIZER_VERSION = 2  # 2: operators on tensors that are not finite (attention masks of -inf) stay float
# Engines agree on a quantized output within a few of its steps: one rounding that flips in a
# requantization inside the model moves the output by a step or two. On an output whose range
# (calibrated over many inputs) is wide against its values, that is more than INT8_TOLERANCE.
OUTPUT_STEPS_ALLOWED = 3
# Layers with weights that ONNX Runtime's quantizer leaves float (its recurrent ones, a transposed conv): fallbacks to name
WEIGHTED_FLOAT_OPS = ("GRU", "LSTM", "RNN", "ConvTranspose")
ERROR_MARGIN = 2  # engines agree within twice what int8 moves an output from fp32 (_int8_tolerance)
ERROR_SAMPLES = 8  # inputs that int8's own error is measured on: the agreement check's first ones


def _half_module(inner):
    import torch
    from torch import nn
    from torch.utils._pytree import tree_map_only

    class HalfPrecision(nn.Module):
        """fp16 weights and arithmetic inside; fp32 at the edges, like every other variant."""

        def __init__(self, module):
            super().__init__()
            self.module = module.half()

        def forward(self, *inputs):  # float inputs to fp16, float outputs back to fp32 (integer and bool ones as they are)
            halved = (t.half() if t.is_floating_point() else t for t in inputs)
            return tree_map_only(torch.Tensor, lambda t: t.float() if t.is_floating_point() else t, self.module(*halved))

        def extra_repr(self) -> str:  # in the repr, and so in the digest: builds of the forward before this are redone
            return "float edges fp32, integer and bool outputs kept"

    return HalfPrecision(inner).eval()


class FP16(Technique):
    kind: Literal["fp16"] = "fp16"
    version: Literal[2] = 2  # 2: integer and bool outputs keep their dtype (were made float32)

    def apply(self, work: Work) -> Work:
        module = self.clone_module(work)
        finalize_pruning(module)
        work.module = _half_module(module)
        work.metrics["tolerance"] = FP16_TOLERANCE
        work.frontend = "onnx"  # TVM 0.27's torch frontend types an fp16 conv2d's output fp32, then fails on the bias add
        work.notes.append("fp16 weights and arithmetic (float inputs and outputs fp32); reaches TVM through its ONNX frontend, "
                          "and TVM accumulates its convolutions in fp16 (PyTorch and ONNX Runtime in fp32)")
        return work


class Int8(Technique):
    kind: Literal["int8"] = "int8"
    version: Literal[2] = 2  # 2: calibration calls picked across the whole data set, not its first ones
    mode: Literal["static", "dynamic"] = "static"
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    samples: int = Field(64, ge=1, description="static: calibration calls (of the model's training data, else its held-out data, else seeded inputs)")
    per_channel: bool = True
    activations: Literal["uint8", "int8"] = "uint8"
    primary = "mode"
    only_with = {"calibration": ("mode", "static"), "samples": ("mode", "static"), "activations": ("mode", "static")}

    def uses_train_data(self) -> bool:
        return self.mode == "static"  # calibration

    def apply(self, work: Work) -> Work:
        if work.module is None and work.onnx_path is not None and work.onnx_path == work.base.onnx_path:
            fp32_path = work.onnx_path  # an .onnx file as given: the quantizer takes it as it is
            import onnx

            found = quantized_ops(onnx.load(str(fp32_path), load_external_data=False).graph)
            if found:  # quantized again, ORT's static quantizer writes an invalid graph; its dynamic one changes nothing
                named = ", ".join(f"{n} {op}" for op, n in found.items())
                raise NotApplicable(f"'{work.base.name}' is already quantized ({named})",
                                    "measure it as it is: its fp32 row is the quantized model; leave int8 out for it")
        else:
            module = self.clone_module(work)
            finalize_pruning(module)
            fp32_path = _onnx_of(module, work)
        calibration = _calibration_set(work.base) if self.mode == "static" else None
        weights = [file_hash(f) for f in onnx_weights_files(fp32_path)]  # an .onnx's weights kept beside it
        key = content_hash("int8", file_hash(fp32_path), *weights, self.model_dump(mode="json"), _ort_version(),
                           QUANTIZER_VERSION, [i.describe() for i in work.base.inputs],  # the seeded calibration inputs' ranges
                           *([calibration.digest] if calibration is not None else []))
        out = stage_dir(work.cache_dir, "int8", key) / f"{short_name(work.base.name)}-int8.onnx"
        if self.mode == "static":
            data, source = self.calibration_data(work.base)
            # What calibrated, beside the config's `samples` (what was asked): a smaller data set gives fewer calls.
            work.metrics["calibration"] = {"calls": len(data), "content_hash": calibration.digest[:16] if calibration
                                           is not None else None}  # None: seeded inputs
            note = (f"int8 static QDQ: per-{'channel' if self.per_channel else 'tensor'} int8 weights, per-tensor "
                    f"{self.activations} activations, {self.calibration} calibration on {counted(len(data), 'call')} of {source}")
        else:
            data, note = None, "int8 dynamic: int8 weights, activations quantized at run time"
        if not intact(out):
            with written_whole(out, checked=True) as partial:
                self._quantize(fp32_path, partial, data, work.base.inputs)
        import onnx

        proto = onnx.load(str(out))  # read once: which ops are int8, each output's step, what TVM makes of it
        graph = proto.graph
        ops = _integer_ops(graph)
        work.module, work.onnx_path = None, out
        work.metrics["quantized_ops"] = ops
        errors = _int8_error(fp32_path, out, work.base)
        work.metrics.update(_int8_tolerance(graph, errors))
        fallback = {op: n for op, n in ops["float"].items() if op in ("Conv", "Gemm", "MatMul", *WEIGHTED_FLOAT_OPS)}
        if not ops["int8"]:  # (dynamic int8 of a model of convolutions alone): said plainly, not as int8 weights
            note = f"int8 {self.mode}: quantized no operator, every one stayed fp32 (this step changed nothing)"
        why = ""
        if self.mode == "dynamic" and (unsupported := [k for k in TVM_UNSUPPORTED_INTEGER_OPS if k in fallback]):
            why = (f" ({', '.join(f'{TVM_UNSUPPORTED_INTEGER_OPS[k]} is not imported by TVM' for k in unsupported)}"
                   + ("; int8 static quantizes them" if not ops["int8"] else "") + ")")
        work.notes.append(note + (f"; fp32 fallback for {fallback}{why}" if fallback else ""))
        if self.mode == "static":  # what TVM will make of it; ONNX Runtime's rows need none of it
            from ..qdq import kernels_note

            kernels, tvm_note = kernels_note(proto, onnx_shapes(proto, work.base.inputs))
            if kernels is not None:
                work.metrics["tvm_int8_kernels"] = kernels
            work.notes.append(tvm_note)
        return work

    def calibration_data(self, base: LoadedModel) -> tuple[list[Feed], str]:
        """Real inputs where there are some: the training samples, else the held-out ones (said in the
        note: accuracy measured on what calibrated may read a little high); seeded inputs of the
        model's shape where there are none (a seed apart from the agreement inputs)."""
        data = _calibration_set(base)
        if data is not None:  # seeded picks across the whole set: a file sorted by class calibrates on every class
            feeds = data.feeds(base.batch)
            picked = sorted(np.random.default_rng(0).permutation(len(feeds))[: self.samples])
            return [feeds[i] for i in picked], (f"{data.source}" + (
                f" (picked at random from its {len(feeds)})" if len(picked) < len(feeds) else "") + (
                f" (all it has: {self.samples} were asked for)" if len(picked) < self.samples else "") + (
                "" if data is base.train_data else (", the held-out data: no training data was given (accuracy measured "
                                                    "on what calibrated may read a little high)")))
        return random_feeds(base.inputs, self.samples, seed=7), "seeded model inputs (no data set for this model)"

    def _quantize(self, fp32_path: Path, out: Path, data, inputs: tuple[ModelInput, ...]) -> None:
        import onnx
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_dynamic, quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = out.with_suffix(".pre.onnx")
        weight_type = QuantType.QInt8
        try:
            with _quiet():
                quant_pre_process(str(fp32_path), str(prepared))
                if self.mode == "dynamic":
                    quantize_dynamic(str(prepared), str(out), weight_type=weight_type, per_channel=self.per_channel,
                                     op_types_to_quantize=TVM_DYNAMIC_OP_TYPES)
                else:
                    names = [i.name for i in graph_inputs(onnx.load(str(prepared), load_external_data=False).graph)]
                    feeds = [feed_dict(inputs, item, names) for item in data]

                    class Reader(CalibrationDataReader):
                        def __init__(self):
                            self.items = iter(feeds)

                        def get_next(self):
                            return next(self.items, None)

                    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[self.calibration]
                    excluded = _non_finite_nodes(prepared, feeds)
                    with warnings.catch_warnings():
                        # ORT computes a scale and zero point for every tensor it calibrated, quantized or not. A
                        # tensor holding -inf (a padding mask's) has an infinite range: its zero point divides inf
                        # by inf ("invalid value encountered in divide ... zero_point"). Its operators are the
                        # excluded ones, left float, so that zero point is never used (no Q/DQ node takes it).
                        # A model with no such tensor keeps the warning: there it would mean something.
                        if excluded:
                            warnings.filterwarnings("ignore", r"invalid value encountered in (divide|cast)", RuntimeWarning,
                                                    r"onnxruntime\.quantization\.quant_utils")
                        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                                        per_channel=self.per_channel, weight_type=weight_type,
                                        activation_type=QuantType.QUInt8 if self.activations == "uint8" else QuantType.QInt8,
                                        calibrate_method=method, nodes_to_exclude=excluded)
        except Exception as err:  # the quantizer raises assorted errors for graphs it cannot handle
            raise HarnessError(f"ONNX Runtime could not quantize the model to int8 ({self.mode}): {one_line(err)}",
                               "try int8:dynamic, or quantize fewer layers") from None
        finally:
            prepared.unlink(missing_ok=True)


def _calibration_set(base: LoadedModel) -> DataSet | None:
    """The samples static int8 calibrates on: the training data, else the held-out data."""
    return base.train_data if base.train_data is not None else base.eval_data


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


@contextlib.contextmanager
def _quiet():
    """The quantizer prints calibration progress to stdout and logs warnings; keep the report clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _non_finite_nodes(path: Path, feeds: list[dict]) -> list[str]:
    """The operators that make or take a tensor holding -inf, inf or NaN on any calibration input (an
    attention mask of -inf): its range has no scale, and quantizing it makes noise. They stay float.
    Unnamed operators get names here (the file is rewritten), since the quantizer excludes by name."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    for k, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{k}"
    onnx.save(model, str(path))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        probe.graph.output.extend(onnx.ValueInfoProto(name=o) for o in node.output if o and o not in known)
        known.update(node.output)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    bad = {t.name for t in model.graph.initializer if t.data_type in floats
           and not np.all(np.isfinite(onnx.numpy_helper.to_array(t)))}
    for feed in feeds:
        for name, value in zip(outputs, session.run(None, feed)):
            value = np.asarray(value)
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                bad.add(name)
    return [n.name for n in model.graph.node if bad & (set(n.input) | set(n.output))]


def _int8_tolerance(graph, errors: list[float] | None = None) -> dict:
    """A quantized model's tolerance, and each output's floor: a few of its quantization steps, or,
    where int8 itself moves the output further from fp32 (`errors`, see _int8_error), twice that:
    in a deep model one rounding that flips early grows through the layers after it, and two int8
    engines that round differently can each be that far from fp32, in opposite directions."""
    floors = [OUTPUT_STEPS_ALLOWED * s if s else 0.0 for s in _output_steps(graph)]
    if errors:
        floors = [max(f, ERROR_MARGIN * e) for f, e in zip(floors, errors)]
    return {"tolerance": INT8_TOLERANCE, "tolerance_floors": floors}


def _int8_error(fp32_path: Path, int8_path: Path, base: LoadedModel) -> list[float] | None:
    """How far int8 moves each output from fp32, on ONNX Runtime (the int8 rows' reference engine): the
    largest absolute difference over the first few of the inputs rows are checked on. 0 for an output
    with values that are not finite (NaN, an infinity): it widens nothing. Kept beside the int8 file,
    by the inputs' hash (a second run's apply runs no session). None where ONNX Runtime fails on it:
    its rows will say what fails, and the floors stay the quantization steps'."""
    feeds = base.samples(ERROR_SAMPLES)[:ERROR_SAMPLES]
    arrays = [np.ascontiguousarray(a) for feed in feeds for a in feed]
    inputs = content_hash(*(part for a in arrays for part in (f"{a.dtype}{a.shape}", a.tobytes())))
    kept = int8_path.with_name(f"error-{inputs[:16]}.json")
    with contextlib.suppress(OSError, ValueError):
        errors = json.loads(kept.read_text())
        if isinstance(errors, list) and all(isinstance(e, float) for e in errors):
            return errors
    try:
        errors = _measured_error(fp32_path, int8_path, base, feeds)
    except Exception:
        return None
    with contextlib.suppress(OSError), written_whole(kept) as partial:
        partial.write_text(json.dumps(errors))
    return errors


def _measured_error(fp32_path: Path, int8_path: Path, base: LoadedModel, feeds: list[Feed]) -> list[float]:
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32_path, int8_path)]
    errors: list[float] = []
    for feed in feeds:
        outputs = [s.run(None, feed_dict(base.inputs, feed, [i.name for i in s.get_inputs()])) for s in sessions]
        diffs = [np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) for a, b in zip(*outputs)]
        # 0 for an integer output (an argmax): how far apart two class ids are is no floor (measure.agreement)
        exact = [exact_output(np.asarray(a)) for a in outputs[0]]
        found = [float(d.max()) if d.size and np.all(np.isfinite(d)) and not e else 0.0 for d, e in zip(diffs, exact)]
        errors = [max(pair) for pair in zip(errors, found)] if errors else found
    return errors


def _output_steps(graph) -> list[float | None]:
    """Each graph output's quantization step: the scale of the DequantizeLinear that makes it (None
    for an output that is not quantized)."""
    import onnx

    scales = {node.input[1] for node in graph.node if node.op_type == "DequantizeLinear"}
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name in scales}
    made_by = {o: node for node in graph.node for o in node.output}
    steps = []
    for output in graph.output:
        node = made_by.get(output.name)
        scale = constants.get(node.input[1]) if node is not None and node.op_type == "DequantizeLinear" else None
        steps.append(float(np.max(scale)) if scale is not None else None)
    return steps


def given_precision(path: Path) -> dict:
    """An ONNX file that came quantized (QDQ, QOperator, dynamic) or in fp16: its engines round
    differently, as the int8 and fp16 variants' do, and are judged by those variants' tolerance."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph  # dtypes and scales: not the weights' data
    if quantized_ops(graph):
        return _int8_tolerance(graph)
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer):
        return {"tolerance": FP16_TOLERANCE}
    return {}


def _integer_ops(graph) -> dict:
    """Which compute operators got int8 inputs (QDQ: fed by DequantizeLinear; dynamic: *Integer ops)
    and which stayed float: the per-operator fallback a report names."""
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    integer, floating = collections.Counter(), collections.Counter()
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast", "Reshape", "Flatten"):
            continue
        if is_quantized_op(node.op_type):
            integer[node.op_type] += 1
        elif node.op_type in WEIGHTED_FLOAT_OPS:  # int8 only with an int8 weight: its input may be a quantized conv's output
            (integer if len(node.input) > 1 and node.input[1] in dequantized else floating)[node.op_type] += 1
        elif node.op_type in ("Conv", "Gemm", "MatMul", "Add", "Mul", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu"):
            (integer if any(i in dequantized for i in node.input) else floating)[node.op_type] += 1
    return {"int8": dict(integer), "float": dict(floating)}


def _onnx_of(module, work: Work) -> Path:
    """The current module as an fp32 ONNX file (the harness's one exporter, cached by content)."""
    from ..export import onnx_file

    base = work.base
    current = LoadedModel(name=base.name, source=base.source, inputs=base.inputs,
                          digest=torch_digest(module, base.inputs, base.behaviour), torch_module=module)
    path, _ = onnx_file(current, work.cache_dir)
    return path

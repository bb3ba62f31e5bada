"""One resnet18 conv layer (3x3, 64 -> 64 channels, 56x56) tuned by MetaSchedule as fp32 and as the
integer kernel the int8 rewrite makes of it (uint8 x int8 -> int32), the same trials each, in one
run: does MetaSchedule tune the integer kernels, and how do they compare?

Prints a table and ends with one JSON line:
  {"int8_vs_fp32_tuned": r, "int8_vs_fp32_untuned": r, "vnni_tensorized": bool, "trials": n, ...}
where a ratio above 1 means int8 is faster. Records go to a temporary in-memory database.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time

import numpy as np

import last_line  # benchmarks/last_line.py: the closing JSON line, also on failure

CHANNELS, SIZE = 64, 56


def layer(dtype: str):
    from tvm import relax

    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    if dtype == "int8":  # what tvmharness.qdq emits: the input already padded with its zero point
        x = relax.Var("x", ty=relax.TensorType(shape=(1, CHANNELS, SIZE + 2, SIZE + 2), dtype="uint8"))
        weight = rng.integers(-127, 128, (CHANNELS, CHANNELS, 3, 3)).astype("int8")
        data = rng.integers(0, 256, (1, CHANNELS, SIZE + 2, SIZE + 2)).astype("uint8")
        attrs = {"padding": 0, "out_dtype": "int32"}
    else:
        weight = rng.standard_normal((CHANNELS, CHANNELS, 3, 3)).astype("float32")
        data = rng.standard_normal((1, CHANNELS, SIZE, SIZE)).astype("float32")
        x = relax.Var("x", ty=relax.TensorType(shape=(1, CHANNELS, SIZE, SIZE), dtype="float32"))
        attrs = {"padding": 1}
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.nn.conv2d(x, relax.const(weight), **attrs)))
        bb.emit_func_output(out)
    return bb.get(), data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    import tvm
    from rich.console import Console
    from rich.table import Table
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import compile_relax, extract_tasks, extracted_tasks_to_tune_contexts

    from tvmharness import _ms_build
    from tvmharness.provenance import git_commit
    from tvmharness.targets import resolve
    from tvmharness.tune import _load_tensor_intrinsics, _reset_meta_schedule_logging, lower_for_tuning

    target = resolve("x86", args.threads)
    _reset_meta_schedule_logging()
    _load_tensor_intrinsics(gpu=False)

    def median_ms(executable, data) -> float:
        vm = relax.VirtualMachine(executable, tvm.cpu())
        return vm.time_evaluator("main", tvm.cpu(), number=5, repeat=15)(tvm.runtime.tensor(data)).median * 1e3

    results = {}
    for dtype in ("fp32", "int8"):
        mod, data = layer(dtype)
        untuned = median_ms(tvm.compile(mod, target=target.tvm_target()), data)
        mod_pre, mod_zero = lower_for_tuning(mod, target)
        tasks = extract_tasks(mod_zero, target.tvm_target())
        database = ms.database.MemoryDatabase()
        with tempfile.TemporaryDirectory(prefix=f"tvmharness-int8-conv-{dtype}-") as work:  # MetaSchedule's logs
            contexts, weights = extracted_tasks_to_tune_contexts(tasks, work_dir=work, num_threads=args.threads, seed=0)
            started = time.perf_counter()
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work, max_trials_global=args.trials,
                          num_trials_per_iter=16, database=database,
                          builder=ms.builder.LocalBuilder(max_workers=args.threads, timeout_sec=60,
                                                          f_build=_ms_build.fast_build,
                                                          f_export=functools.partial(_ms_build.export_shared_library,
                                                                                             folder=work)),
                          runner=ms.runner.LocalRunner(timeout_sec=30, evaluator_config=ms.runner.EvaluatorConfig(
                              number=3, repeat=1, min_repeat_ms=20)),
                          cost_model=ms.cost_model.XGBModel(num_warmup_samples=8, num_tuning_cores=args.threads))
            seconds = time.perf_counter() - started
        tuned = median_ms(compile_relax(database, mod_pre, target.tvm_target(), params=None), data)
        traces = [str(r.trace) for r in database.get_all_tuning_records()]
        results[dtype] = {"untuned_ms": untuned, "tuned_ms": tuned, "records": len(traces), "tune_s": seconds,
                          "vnni": any("vnni" in t for t in traces)}

    table = Table("layer", "untuned ms", "tuned ms", "records", "tune s", "VNNI tensorized",
                  title=f"resnet18 conv 3x3 {CHANNELS}->{CHANNELS} @{SIZE}x{SIZE}, {args.trials} trials each, "
                        f"{args.threads} threads, {target.tvm_dict}")
    for dtype, r in results.items():
        table.add_row(dtype, f"{r['untuned_ms']:.2f}", f"{r['tuned_ms']:.2f}", str(r["records"]), f"{r['tune_s']:.0f}",
                      str(r["vnni"]))
    Console(width=160).print(table)
    print(f"git {git_commit()}")
    print(json.dumps({"int8_vs_fp32_tuned": round(results["fp32"]["tuned_ms"] / results["int8"]["tuned_ms"], 3),
                      "int8_vs_fp32_untuned": round(results["fp32"]["untuned_ms"] / results["int8"]["untuned_ms"], 3),
                      "vnni_tensorized": results["int8"]["vnni"], "trials": args.trials,
                      "records": {d: r["records"] for d, r in results.items()}}))


if __name__ == "__main__":
    last_line.run(main)

"""Tuned TVM vs untuned TVM vs ONNX Runtime vs PyTorch on resnet18 and mobilenet_v2, batch 1, one run.

Tunes each model on this host's x86 target (MetaSchedule + XGBoost; records accumulate in
results/tuning, so later runs start from earlier ones), measures all four engines with the one timing
protocol, and gives each engine's achieved GFLOP/s as a fraction of this machine's practical peak:
the faster of ONNX Runtime's and PyTorch's own 2048x2048 MatMul on the same threads, measured in the
same run. That is practical, not theoretical: an engine's convolutions can match it, and a fraction
just past 1 (ONNX Runtime's resnet18 has reached 1.02) means they ran at least as near the FMA peak.
Ends with one JSON line: {"tuned_vs_ort": {...}, "tuned_vs_torch": {...}, "tuned_vs_untuned": {...},
"peak_fraction": {...}, "trials": n} (a ratio above 1: tuned TVM is faster).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tvmharness.measure import time_call
from tvmharness.models import load_model
from tvmharness.pipeline import run_recipe
from tvmharness.recipe import recipe_from_dict

import last_line  # benchmarks/last_line.py: the closing JSON line, also on failure

MODELS = ["resnet18", "mobilenet_v2"]
ENGINES = ["tvm", "tvm-untuned", "torch", "onnxruntime"]


def matmul_peak_gflops(threads: int, n: int = 2048, repeats: int = 30) -> tuple[float, str]:
    """The practical peak of this CPU on these threads: the faster of ONNX Runtime's and PyTorch's own
    large MatMul (their BLAS kernels differ; either alone has come out below what a whole model reached)."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    a, b = torch.from_numpy(feed["a"]), torch.from_numpy(feed["b"])
    torch.set_num_threads(threads)
    medians = {"ONNX Runtime": time_call(lambda: session.run(None, feed), warmup=3, repeats=repeats).median_ms,
               "PyTorch": time_call(lambda: torch.mm(a, b), warmup=3, repeats=repeats).median_ms}
    fastest = min(medians, key=medians.get)
    return 2 * n**3 / (medians[fastest] * 1e-3) / 1e9, f"{fastest}'s {n}x{n} MatMul"


def model_gflop(model) -> float:
    """FLOPs of one forward pass (multiply and add counted separately), from PyTorch's counter."""
    from tvmharness.compress.metrics import flop_count

    flops = flop_count(model.torch_module, model.example())
    if flops is None:
        raise SystemExit(f"torch's FLOP counter cannot count {model.name}")
    return flops / 1e9


def tune_in_subprocess(recipe) -> dict[str, dict]:
    """Tune through the CLI in its own process, so that nothing MetaSchedule leaves behind (worker
    pools, threads) shares the CPU with the measurements that follow."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tune.toml"
        budget = recipe.tune
        lines = [f"models = {json.dumps(recipe.models)}", f"targets = {json.dumps(recipe.targets)}",
                 "[measure]", f"threads = {recipe.measure.threads}", "[tune]", f"trials = {budget.trials}"]
        lines += [f"time_budget = {json.dumps(budget.time_budget)}"] if budget.time_budget else []
        lines += ["[output]", f"dir = {json.dumps(str(recipe.output.dir.resolve()))}"]
        path.write_text("\n".join(lines) + "\n")
        proc = subprocess.run([sys.executable, "-m", "tvmharness", "tune", str(path), "--no-measure", "--json"],
                              stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"tuning failed (exit {proc.returncode}); its messages are above")
    return {s["model"]: s for s in json.loads(proc.stdout)["tune"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=256, help="trials per model this run")
    parser.add_argument("--time-budget", default=None, help="cap per model, e.g. 30m")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", default="results", help="folder of the store, cache and tuning records")
    args = parser.parse_args()

    recipe = recipe_from_dict({"name": "tune_x86", "models": MODELS, "targets": ["x86"], "engines": ENGINES,
                               "measure": {"warmup": 3, "repeats": args.repeats, "threads": args.threads},
                               "tune": {"trials": args.trials, "time_budget": args.time_budget},
                               "output": {"dir": args.results, "store": f"{args.results}/benchmarks.db"}})
    console = Console(width=160)
    tuned = tune_in_subprocess(recipe)
    for res in tuned.values():
        console.print(f"tuned {res['model']}: {res['trials_run']} trials in {res['seconds']:.0f} s "
                      f"({res['stopped'] or 'budget spent'})")
    peak, peak_from = matmul_peak_gflops(args.threads)
    result = run_recipe(recipe)
    median = {(r["model"], r["engine"]): r.get("median_ms") for r in result.rows}
    failed = [(r["model"], r["engine"], r["reason"]) for r in result.rows if r["status"] != "ok"]
    if failed:
        raise SystemExit(f"rows failed: {failed}")

    figures = {"tuned_vs_ort": {}, "tuned_vs_torch": {}, "tuned_vs_untuned": {}, "peak_fraction": {}}
    table = Table("model", *[f"{e} ms" for e in ENGINES], "tuned vs ort", "tuned vs torch", "tuned vs untuned",
                  "GFLOP/s tvm / ort / torch", "peak fraction tvm / ort / torch",
                  title=f"tune_x86: batch 1, {args.threads} threads, medians of {args.repeats}; peak {peak:.0f} GFLOP/s "
                        f"({peak_from}, same run)")
    for name in MODELS:
        m = {e: median[(name, e)] for e in ENGINES}
        gflop = model_gflop(load_model(name, recipe.cache_dir))
        rate = {e: gflop / (m[e] * 1e-3) for e in ENGINES}
        figures["tuned_vs_ort"][name] = round(m["onnxruntime"] / m["tvm"], 4)
        figures["tuned_vs_torch"][name] = round(m["torch"] / m["tvm"], 4)
        figures["tuned_vs_untuned"][name] = round(m["tvm-untuned"] / m["tvm"], 4)
        figures["peak_fraction"][name] = {e: round(rate[e] / peak, 4) for e in ENGINES}
        table.add_row(name, *[f"{m[e]:.2f}" for e in ENGINES], f"{figures['tuned_vs_ort'][name]:.3f}x",
                      f"{figures['tuned_vs_torch'][name]:.3f}x", f"{figures['tuned_vs_untuned'][name]:.1f}x",
                      f"{rate['tvm']:.0f} / {rate['onnxruntime']:.0f} / {rate['torch']:.0f}",
                      " / ".join(f"{rate[e] / peak:.2f}" for e in ("tvm", "onnxruntime", "torch")))
    console.print(table)
    for name, res in tuned.items():
        known = [t for t in res["tasks"] if t["best_ms"] is not None]
        total = sum(t["weight"] * t["best_ms"] for t in known) or 1.0
        share = sorted(known, key=lambda t: -t["weight"] * t["best_ms"])[:5]
        console.print(f"{name}: {len(known)}/{len(res['tasks'])} tasks have records "
                      f"({sum(t['known_records'] + t['trials'] for t in res['tasks'])} trials in all); shares of those "
                      "tasks' tuned time (the others run untuned, outside these shares): "
                      + ", ".join(f"{t['name']} {100 * t['weight'] * t['best_ms'] / total:.0f}%" for t in share))
    trials = {name: res["trials_run"] for name, res in tuned.items()}
    print(json.dumps(figures | {"trials": sum(trials.values()), "trials_per_model": trials, "peak_gflops": round(peak, 1),
                                "threads": args.threads}))


if __name__ == "__main__":
    last_line.run(main)

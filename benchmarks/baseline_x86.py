"""Untuned TVM vs ONNX Runtime vs PyTorch on resnet18 and mobilenet_v2, batch 1, measured in one run.

Prints a table for people and ends with one JSON line:
  {"tvm_vs_ort": {"resnet18": r, "mobilenet_v2": r}, "tvm_vs_torch": {...}, ...}
where a ratio above 1 means TVM is faster. The rows are stored like any run's (results/benchmarks.db).
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from tvmharness.pipeline import run_recipe
from tvmharness.recipe import recipe_from_dict

import last_line  # benchmarks/last_line.py: the closing JSON line, also on failure

MODELS = ["resnet18", "mobilenet_v2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    parser.add_argument("--store", default="results/benchmarks.db")
    args = parser.parse_args()

    measure = {"warmup": 3, "repeats": args.repeats} | ({"threads": args.threads} if args.threads else {})
    recipe = recipe_from_dict({"name": "baseline_x86", "models": MODELS, "targets": ["x86"],
                               "engines": ["tvm", "torch", "onnxruntime"], "measure": measure,
                               "output": {"store": args.store}})
    result = run_recipe(recipe)
    median = {(r["model"], r["engine"]): r.get("median_ms") for r in result.rows}

    table = Table("model", "torch ms", "onnxruntime ms", "tvm (untuned) ms", "tvm vs ort", "tvm vs torch", "ort vs torch",
                  title=f"baseline_x86: batch 1, {recipe.measure.threads} threads, medians of {args.repeats} repeats")
    figures = {"tvm_vs_ort": {}, "tvm_vs_torch": {}, "ort_vs_torch": {}}
    for model in MODELS:
        t, o, v = median[(model, "torch")], median[(model, "onnxruntime")], median[(model, "tvm")]
        if None in (t, o, v):
            failed = [r for r in result.rows if r["model"] == model and r["status"] != "ok"]
            raise SystemExit(f"{model}: a row failed: {[(r['engine'], r['reason']) for r in failed]}")
        figures["tvm_vs_ort"][model] = round(o / v, 4)
        figures["tvm_vs_torch"][model] = round(t / v, 4)
        figures["ort_vs_torch"][model] = round(t / o, 4)
        table.add_row(model, f"{t:.2f}", f"{o:.2f}", f"{v:.2f}", f"{o / v:.3f}x", f"{t / v:.3f}x", f"{t / o:.2f}x")
    console = Console(width=160)
    console.print(table)
    console.print(f"TVM rows are untuned (TVM's default kernels); run {result.run_id} in {args.store}, "
                  f"git {result.provenance['git_commit']}")
    print(json.dumps(figures | {"threads": recipe.measure.threads, "repeats": args.repeats, "untuned": True}))


if __name__ == "__main__":
    last_line.run(main)

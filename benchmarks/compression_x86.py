"""Compression variants of the digits CNN and resnet18 on x86: accuracy change, size and latency
against fp32 TVM and against ONNX Runtime's own int8 of the same model, all measured in one run.

Prints a table for people and ends with one JSON line:
  {"int8_vs_fp32_tvm": {"resnet18": r}, "int8_tvm_vs_int8_ort": {"resnet18": r},
   "int8_top1_agreement": {"resnet18": a}, "digits_int8_acc_drop_pts": d, ...}
where a latency ratio above 1 means the row is faster. TVM rows use the tuning records under
<output dir>/tuning where they exist, else TVM's default kernels (the rows say which). The rows are
stored like any run's (results/benchmarks.db).
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from tvmharness.compress import parse_variant
from tvmharness.pipeline import run_recipe
from tvmharness.recipe import recipe_from_dict

import last_line  # benchmarks/last_line.py: the closing JSON line, also on failure

INT8 = "int8"
DIGITS_VARIANTS = ["fp32", INT8, "int8:dynamic", "fp16", "prune:0.5+finetune", "prune:0.5+finetune+int8",
                   "channels:0.5+finetune", "lowrank:energy=0.9", "cluster:16+finetune:1", "distill"]
RESNET_VARIANTS = ["fp32", INT8, "channels:0.5"]


def _ratio(a, b):
    return round(a / b, 4) if a and b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    parser.add_argument("--samples", type=int, default=16, help="inputs compared with fp32 (top-1 agreement)")
    parser.add_argument("--store", default="results/benchmarks.db")
    parser.add_argument("--output-dir", default="results", help="cache and tuning records")
    parser.add_argument("--resnet-variants", nargs="*", default=RESNET_VARIANTS)
    args = parser.parse_args()

    measure = ({"warmup": 2, "repeats": args.repeats, "agreement_samples": args.samples}
               | ({"threads": args.threads} if args.threads else {}))
    rows = []
    for model, variants in (("digits_cnn", DIGITS_VARIANTS), ("resnet18", args.resnet_variants)):
        recipe = recipe_from_dict({"name": "compression_x86", "models": [model], "variants": variants, "targets": ["x86"],
                                   "engines": ["tvm", "torch", "onnxruntime"], "measure": measure,
                                   "thresholds": {"max_accuracy_drop": 0.01},
                                   "output": {"dir": args.output_dir, "store": args.store}})
        result = run_recipe(recipe)
        rows += result.rows
    by = {(r["model"], r["variant"], r["engine"]): r for r in rows}
    int8_name = parse_variant(INT8).name

    table = Table("model", "variant", "engine", "status", "median ms", "acc/agree Δ pts", "size vs fp32",
                  "vs fp32 tvm", "vs int8 ort", "notes",
                  title=f"compression_x86: batch 1, {recipe.measure.threads} threads, medians of {args.repeats} repeats")
    for r in rows:
        fp32_tvm = by.get((r["model"], "fp32", "tvm"), {}).get("median_ms")
        int8_ort = by.get((r["model"], int8_name, "onnxruntime"), {}).get("median_ms")
        d = r["details"]
        drop = d.get("accuracy_drop")
        tuned = r.get("tuned")
        table.add_row(r["model"], r["variant"], r["engine"], r["status"], f"{r['median_ms']:.3f}" if r.get("median_ms") else "—",
                      f"{-100 * drop:+.1f}" if drop is not None else "—",
                      f"{d['size_ratio']:.2f}x" if d.get("size_ratio") else "—",
                      f"{fp32_tvm / r['median_ms']:.2f}x" if fp32_tvm and r.get("median_ms") else "—",
                      f"{int8_ort / r['median_ms']:.2f}x" if int8_ort and r.get("median_ms") else "—",
                      ("baseline" if r["is_baseline"] else "") + (" untuned" if tuned is False else ""))
    console = Console(width=200)
    console.print(table)

    def median(model, variant, engine):
        return by.get((model, variant, engine), {}).get("median_ms")

    figures = {"int8_vs_fp32_tvm": {}, "int8_tvm_vs_int8_ort": {}, "int8_top1_agreement": {}}
    for model in ("resnet18", "digits_cnn"):
        figures["int8_vs_fp32_tvm"][model] = _ratio(median(model, "fp32", "tvm"), median(model, int8_name, "tvm"))
        figures["int8_tvm_vs_int8_ort"][model] = _ratio(median(model, int8_name, "onnxruntime"), median(model, int8_name, "tvm"))
        figures["int8_top1_agreement"][model] = by.get((model, int8_name, "tvm"), {}).get("top1_agreement")
    digits_int8 = by.get(("digits_cnn", int8_name, "tvm"), {})
    figures["digits_int8_acc_drop_pts"] = (round(100 * digits_int8["details"]["accuracy_drop"], 3)
                                           if digits_int8.get("details", {}).get("accuracy_drop") is not None else None)
    pruned = {e: _ratio(median("resnet18", "fp32", e), median("resnet18", "channels:0.5", e))
              for e in ("tvm", "torch", "onnxruntime")}
    figures["channels50_speedup"] = {"resnet18": pruned}
    figures["int8_ort_vs_fp32_ort"] = {"resnet18": _ratio(median("resnet18", "fp32", "onnxruntime"),
                                                          median("resnet18", int8_name, "onnxruntime"))}
    untuned = any(r.get("tuned") is False for r in rows if r["engine"] == "tvm")
    console.print(f"TVM rows {'include untuned builds (default kernels)' if untuned else 'are tuned'}; "
                  f"int8 on TVM: QDQ imported by the ONNX frontend, conv2d/matmul rewritten to integer kernels (tvmharness.qdq). "
                  f"git {result.provenance['git_commit']}, store {args.store}")
    print(json.dumps(figures | {"threads": recipe.measure.threads, "repeats": args.repeats, "tvm_untuned": untuned}))


if __name__ == "__main__":
    last_line.run(main)

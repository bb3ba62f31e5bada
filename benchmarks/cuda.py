"""Tuned TVM on CUDA vs PyTorch eager vs ONNX Runtime's CUDA execution provider, on this machine's
GPU: resnet50 and mobilenet_v2 at batch 1 and 8, in one run.

Tunes each (model, batch) on the cuda target (MetaSchedule + XGBoost; records accumulate in
results/tuning), then measures the three engines with the one timing protocol (each sample one
call, synchronized with the GPU; medians of the repeats). A ratio above 1: tuned TVM is faster.
Ends with one JSON line:
{"tvm_vs_torch": {"resnet50_b1": r, ...}, "tvm_vs_ort": {...}, "gpu": "name", "trials": n}
Where no usable GPU is here it says why, prints {"gpu": null, "skipped": "why"} and exits 2.

    python benchmarks/cuda.py [--trials 256] [--time-budget 5m] [--models resnet50,mobilenet_v2] [--batches 1,8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tvmharness.gpu import cuda_status
from tvmharness.pipeline import run_recipe
from tvmharness.recipe import recipe_from_dict

import last_line  # benchmarks/last_line.py: the closing JSON line, also on failure

ENGINES = ["tvm", "torch", "onnxruntime"]


def tune_in_subprocess(model: str, batch: int, trials: int, results: str, time_budget: str | None) -> dict:
    """Tune through the CLI in its own process, so MetaSchedule's worker pools are gone before timing."""
    budget = f"time_budget = {json.dumps(time_budget)}\n" if time_budget else ""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tune.toml"
        path.write_text(f'models = ["{model}"]\ntargets = ["cuda"]\n[measure]\nbatch = {batch}\n'
                        f"[tune]\ntrials = {trials}\n{budget}[output]\ndir = {json.dumps(str(Path(results).resolve()))}\n")
        proc = subprocess.run([sys.executable, "-m", "tvmharness", "tune", str(path), "--no-measure", "--json"],
                              stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"tuning {model} at batch {batch} failed (exit {proc.returncode}); its messages are above")
    return json.loads(proc.stdout)["tune"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=256, help="tuning trials per model and batch this run")
    parser.add_argument("--time-budget", default=None, help="cap per model and batch's tune, e.g. 5m (records accumulate "
                                                             "across runs: a second run goes on from the first's)")
    parser.add_argument("--models", default="resnet50,mobilenet_v2")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--results", default="results", help="folder of the store, cache and tuning records")
    args = parser.parse_args()
    console = Console(width=160)
    status = cuda_status()
    if not status.usable:
        console.print(f"no usable GPU here: {status.reason}")
        print(json.dumps({"gpu": None, "skipped": status.reason}))
        raise SystemExit(2)

    models, batches = args.models.split(","), [int(b) for b in args.batches.split(",")]
    figures: dict = {"tvm_vs_torch": {}, "tvm_vs_ort": {}}
    trials = 0
    table = Table("model", "batch", "tvm ms", "torch ms", "onnxruntime ms", "tvm vs torch", "tvm vs ort", "trials",
                  "max |diff| tvm, ort", title=f"cuda on {status.name}: medians of {args.repeats}, one run")
    for batch in batches:
        for model in models:
            tuned = tune_in_subprocess(model, batch, args.trials, args.results, args.time_budget)
            trials += tuned["trials_run"]
            recipe = recipe_from_dict({"name": "cuda-benchmark", "models": [model], "targets": ["cuda"], "engines": ENGINES,
                                       "measure": {"warmup": 10, "repeats": args.repeats, "batch": batch},
                                       "output": {"dir": args.results, "store": f"{args.results}/benchmarks.db"}})
            rows = {r["engine"]: r for r in run_recipe(recipe).rows}
            bad = {e: r.get("reason") for e, r in rows.items() if r["status"] != "ok"}
            if bad:
                raise SystemExit(f"{model} at batch {batch}: rows not ok: {bad}")
            ms = {e: rows[e]["median_ms"] for e in ENGINES}
            key = f"{model}_b{batch}"
            figures["tvm_vs_torch"][key] = round(ms["torch"] / ms["tvm"], 4)
            figures["tvm_vs_ort"][key] = round(ms["onnxruntime"] / ms["tvm"], 4)
            table.add_row(model, str(batch), *(f"{ms[e]:.3f}" for e in ENGINES), f"{figures['tvm_vs_torch'][key]:.2f}x",
                          f"{figures['tvm_vs_ort'][key]:.2f}x", str(tuned["trials_run"]),
                          f"{rows['tvm'].get('max_abs_diff', 0):.1e}, {rows['onnxruntime'].get('max_abs_diff', 0):.1e}")
    console.print(table)
    print(json.dumps(figures | {"gpu": status.name, "trials": trials, "trials_per_model_batch": args.trials,
                                "time_budget": args.time_budget}))


if __name__ == "__main__":
    last_line.run(main)

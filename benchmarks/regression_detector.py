"""How far the nightly's verdicts can be trusted on this host: A/A nights (the same TVM build measured
again and again) must give no false regressions, and A/B nights with a slowdown injected into every
timed call (a busy-wait of 3%, 10% or 25% of the build's median) must be caught.

Each night is a fresh process (import, load the module, warm up, the timing protocol's repeats), as a
real nightly is; its samples go to a real results store, and the verdicts come from
tvmharness.report.regress against the history nights, exactly as `tvmharness nightly` judges: a
night whose latency moved is confirmed as the nightly confirms a TVM build, by an A/B in a fresh
process (the history's build and the night's, the injected delay in the latter only, timed in turns
by tvmharness.measure.time_interleaved), and the change stands only if the A/B agrees.
History and test nights are interleaved in a seeded random order, so the host's load drifts over
all of them alike; the history is then stored first, as the earlier runs the test nights are judged by.

    python benchmarks/regression_detector.py [--nights 20] [--history 10] [--replay STORE]

The measuring protocol (repeats, span, warm-up, threads) and the thresholds are those of
recipes/nightly.toml unless given. Prints a table for people, a sweep of the thresholds over the
same nights, and ends with one JSON line:
{"aa_false_positives": n, "aa_nights": n, "detected": {"3": f, "10": f, "25": f}}
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import last_line  # benchmarks/last_line.py: the closing JSON line, also on failure

ROOT = Path(__file__).resolve().parents[1]
SLOWDOWNS = (0.03, 0.10, 0.25)


def night_main(args) -> None:
    """One night, in its own process: load the built module and run the timing protocol; with
    --ab, the night's build (with the delay) and the history's (without) in turns."""
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import tvm
    from tvm import relax

    from tvmharness.measure import time_call, time_interleaved

    dev = tvm.cpu()

    def build(delay_ms: float):
        vm = relax.VirtualMachine(tvm.runtime.load_module(args.night), dev)
        vm.set_input("main", tvm.runtime.tensor(np.load(args.input), dev))
        delay_ns = int(delay_ms * 1e6)

        def call():
            vm.invoke_stateful("main")
            if delay_ns:  # the injected slowdown: a busy-wait inside the timed call, as a slower kernel would be
                end = time.perf_counter_ns() + delay_ns
                while time.perf_counter_ns() < end:
                    pass

        return call

    if args.ab:  # as pipeline.confirm_latency: tonight's build first, the earlier one beside it
        night, history = time_interleaved([build(args.delay_ms), build(0.0)], args.warmup, args.repeats, args.span_s)
        print(json.dumps({"samples_ms": night.samples_ms, "reference_samples_ms": history.samples_ms}))
    else:
        latency = time_call(build(args.delay_ms), args.warmup, args.repeats, args.span_s)
        print(json.dumps({"samples_ms": latency.samples_ms}))


def run_night(library: Path, inputs: Path, delay_ms: float, args, ab: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--night", str(library), "--input", str(inputs), "--delay-ms", repr(delay_ms),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--span-s", repr(args.span_s)] + (["--ab"] if ab else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_nights(args, console):
    """Measure the calibration, history and test nights; they go to a new store, history first."""
    import numpy as np

    from tvmharness.build import build_tvm
    from tvmharness.models import load_model
    from tvmharness.provenance import snapshot
    from tvmharness.results import Store
    from tvmharness.targets import resolve

    cache = Path("results/cache")  # where the other benchmarks and the CLI keep builds: under the working folder
    model = load_model(args.model, cache, 1)
    artifact = build_tvm(model, resolve("x86", args.threads), "torch", cache, None)
    work = Path(tempfile.mkdtemp(prefix="regression-detector-"))
    inputs = work / "input.npy"
    np.save(inputs, model.samples(1)[0][0])  # digits_cnn takes one input
    store = Store(str(work / "history.db"))
    provenance = snapshot() | {"threads": args.threads}

    def record(kind: str, samples: list[float], confirms: int | None = None, ab_reference: dict | None = None) -> int:
        run_id = store.start_run(f"regression-detector {kind}", "0" * 16, {}, provenance)
        store.add(run_id, {"model": args.model, "variant": "fp32", "target": "x86", "engine": "tvm",
                           "engine_version": "", "status": "ok", "samples_ms": samples, "threads": args.threads,
                           "median_ms": float(np.median(samples)), "artifact_bytes": artifact.size_bytes,
                           "target_spec": {}, "details": {"night": kind, "base_ms": base_ms, "confirms": confirms,
                                                          "ab_reference": ab_reference}})
        store.finish_run(run_id)
        return run_id

    started = time.perf_counter()
    # The injected delays are shares of the build's median, taken from a few calibration nights.
    calibration = [np.median(run_night(artifact.library, inputs, 0.0, args)["samples_ms"]) for _ in range(3)]
    base_ms = float(np.median(calibration))
    # History and test nights are measured in one shuffled order, so the history spans the same
    # load regimes of this shared host as the nights judged against it; the store then holds the
    # history first, as earlier runs.
    plan = [("history", 0.0)] * args.history + [("test", 0.0)] * args.nights + \
        [("test", s) for s in SLOWDOWNS for _ in range(args.nights)]
    random.Random(args.seed).shuffle(plan)
    measured = []
    for i, (kind, slowdown) in enumerate(plan):
        console.log(f"night {i + 1}/{len(plan)}: {kind}" + (f", A/B +{slowdown:.0%}" if slowdown else ""))
        measured.append((kind, slowdown, run_night(artifact.library, inputs, slowdown * base_ms, args)["samples_ms"]))
    for kind, slowdown, samples in sorted(measured, key=lambda m: m[0] != "history"):
        record("history" if kind == "history" else f"{slowdown:g}", samples)
    console.log(f"nights kept in {store.url} (judge them again with --replay {work / 'history.db'})")

    def confirmation(slowdown: float, confirms: int, reference_run: int) -> int:
        """Confirm a night whose latency moved by an A/B against the history's build, as `tvmharness
        nightly` confirms a TVM build."""
        console.log(f"confirming night {confirms}" + (f" (A/B +{slowdown:.0%})" if slowdown else " (A/A)"))
        ab = run_night(artifact.library, inputs, slowdown * base_ms, args, ab=True)
        return record("confirm", ab["samples_ms"], confirms, {"run_id": reference_run, "samples_ms": ab["reference_samples_ms"]})

    return store, time.perf_counter() - started, confirmation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nights", type=int, default=20, help="A/A nights, and A/B nights per slowdown")
    parser.add_argument("--history", type=int, default=10, help="A nights that form the series' history")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "nightly.toml"),
                        help="the nightly recipe whose [measure] protocol and [regression] rules are replayed")
    parser.add_argument("--repeats", type=int, help="default: the recipe's")
    parser.add_argument("--warmup", type=int, help="default: the recipe's")
    parser.add_argument("--threads", type=int, help="default: the recipe's")
    parser.add_argument("--span-s", type=float, help="default: the recipe's")
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replay", metavar="STORE", help="judge the nights kept in a store an earlier run wrote, without measuring")
    parser.add_argument("--night", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--ab", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.night:
        return night_main(args)

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from tvmharness.recipe import load_recipe
    from tvmharness.report.regress import FASTER, SLOWER, confirm, fast_latency, judge, needs_confirmation
    from tvmharness.results import Store

    console = Console(stderr=True)
    recipe = load_recipe(args.recipe)
    args.repeats = args.repeats or recipe.measure.repeats
    args.warmup = args.warmup or recipe.measure.warmup
    args.threads = args.threads or recipe.measure.threads
    args.span_s = recipe.measure.span_s if args.span_s is None else args.span_s
    if args.replay:
        store, seconds, confirmation = Store(args.replay), None, None
    else:
        store, seconds, confirmation = measure_nights(args, console)
    frame = store.frame()
    medians = dict(zip(frame["run_id"], frame["median_ms"]))
    kinds = {r["run_id"]: r["details"]["night"] for r in frame.to_dict("records")}
    confirmations = {r["details"]["confirms"]: r["run_id"] for r in frame.to_dict("records") if r["details"]["night"] == "confirm"}
    history = [run_id for run_id, kind in kinds.items() if kind == "history"]
    nights = [(float(kind), run_id) for run_id, kind in kinds.items() if kind not in ("history", "confirm")]
    args.nights = len(nights) // (1 + len(SLOWDOWNS))
    base_ms = frame["details"].iloc[0].get("base_ms") or float(np.median([medians[r] for r in history]))

    def first(run_id: int, rules):
        (v,) = judge(frame[frame["run_id"].isin([*history, run_id])], run_id, rules)
        return v

    def verdicts(rules, confirmed: bool = True) -> list[tuple[float, str, dict]]:
        """Each test night's verdict; with `confirmed`, a latency change stands only if a second
        night (measured now if the store has none) agrees, judged against the same history as the first."""
        nonlocal frame
        out = []
        for slowdown, run_id in nights:
            v = first(run_id, rules)
            if confirmed and needs_confirmation(v):
                if run_id not in confirmations and confirmation is not None:
                    confirmations[run_id] = confirmation(slowdown, run_id, max(history))
                    frame = store.frame()
                again = confirmations.get(run_id)
                v = confirm(v, first(again, rules) if again is not None else None)
            out.append((slowdown, v.verdict, v.evidence))
        return out

    def rates(judged) -> tuple[int, int, dict]:
        aa = [v for s, v, _ in judged if s == 0.0]
        false_pos = sum(v in (SLOWER, FASTER) for v in aa)
        detected = {f"{s * 100:g}": sum(v == SLOWER for s2, v, _ in judged if s2 == s) / args.nights for s in SLOWDOWNS}
        return false_pos, len(aa), detected

    rules = recipe.regression
    judged = verdicts(rules)
    hist_levels = [fast_latency(frame.loc[frame["run_id"] == r, "samples_ms"].iloc[0]) for r in history]
    threads, repeats = int(frame["threads"].iloc[0]), len(frame["samples_ms"].iloc[0])
    took = f"{seconds:.0f} s" if seconds is not None else "replayed"
    table = Table(title=f"{args.model} on TVM (x86, {threads} threads): {len(history)} history nights, "
                        f"{len(nights)} test nights, {repeats} repeats per night, {took}; "
                        f"injected delays are shares of {base_ms:.4f} ms")
    for col in ("nights", "injected", "p10 change (median of nights)", "flagged slower", "flagged faster", "same",
                "changes not confirmed"):
        table.add_column(col, justify="right")
    for slowdown in (0.0, *SLOWDOWNS):
        mine = [(v, e) for s, v, e in judged if s == slowdown]
        changes = [e["latency_change"] for _, e in mine]
        table.add_row("A/A" if not slowdown else "A/B", f"+{slowdown:.0%}", f"{np.median(changes):+.1%}",
                      str(sum(v == SLOWER for v, _ in mine)), str(sum(v == FASTER for v, _ in mine)),
                      str(sum(v not in (SLOWER, FASTER) for v, _ in mine)), str(sum(e.get("confirmed") is False for _, e in mine)))
    out = Console()
    out.print(table)
    sigma = judged[0][2]["night_sigma"]
    sigma_text = f"{sigma:.2%}" if sigma is not None else f"unknown (fewer than {rules.min_history} history nights)"
    out.print(f"history p10 {min(hist_levels):.4f}..{max(hist_levels):.4f} ms; night-to-night sigma {sigma_text}; "
              f"noise band ±{judged[0][2]['noise_band']:.1%} (rules: min_effect {rules.min_effect:.0%}, "
              f"alpha {rules.alpha:g}, window {rules.window})")

    sweep = Table(title="the first measurements alone (no confirmation) under other thresholds (min_effect x window)")
    for col in ("min_effect", "window", "A/A false positives", "3%", "10%", "25%"):
        sweep.add_column(col, justify="right")
    for min_effect in (0.0, 0.03, 0.05, 0.08):
        for window in (5, 10):
            fp, n, det = rates(verdicts(rules.model_copy(update={"min_effect": min_effect, "window": window}), confirmed=False))
            sweep.add_row(f"{min_effect:.0%}", str(window), f"{fp}/{n}", *(f"{det[k]:.0%}" for k in det))
    out.print(sweep)

    false_pos, aa_nights, detected = rates(judged)
    print(json.dumps({"aa_false_positives": false_pos, "aa_nights": aa_nights, "detected": detected}))


if __name__ == "__main__":
    last_line.run(main)

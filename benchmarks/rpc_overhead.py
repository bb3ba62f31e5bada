"""What the remote path costs, on loopback: the same module timed in this process and on a dev kit
through the tracker (the harness overhead ratio), and jobs per hour with one kit vs two.

    python benchmarks/rpc_overhead.py [--jobs 6] [--models digits_cnn mobilenet_v2]

Kits run this host's Python (`tvmharness devkit serve`) with one TVM thread each, so that two kits
fit on two cores; the local timing uses one thread too. Throughput jobs measure untuned mobilenet_v2,
so that most of a job's time is spent on the kit. Ends with one JSON line:
{"rpc_over_local": r, "two_kits_over_one": r} (rpc_over_local: kit median / local median, for the
first model; per model in "rpc_over_local_by_model")."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM's pool starts: the kits run one thread each too

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tvmharness.build import build_tvm  # noqa: E402
from tvmharness.measure import time_call  # noqa: E402
from tvmharness.models import load_model  # noqa: E402
from tvmharness.remote.loopback import LoopbackRack  # noqa: E402
from tvmharness.remote.rack import KitJob, Rack  # noqa: E402
from tvmharness.remote.tracker import parse_address  # noqa: E402
from tvmharness.targets import resolve  # noqa: E402

import last_line  # benchmarks/last_line.py: the closing JSON line, also on failure

REPEATS = 30


def _bound_locally(library: Path, feed):
    """The very library the kit gets, loaded in this process, with the inputs bound as on the kit."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    vm.set_input("main", *(tvm.runtime.tensor(a, tvm.cpu()) for a in feed))
    return lambda: vm.invoke_stateful("main")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6, help="jobs per throughput measurement")
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "mobilenet_v2"])
    parser.add_argument("--job-model", default="mobilenet_v2",
                        help="the model each throughput job measures (untuned: most of a job's time is on the kit)")
    args = parser.parse_args()
    cache = Path("results/cache")
    console = Console()
    remote_x86 = resolve("x86-rpc", 1)
    with LoopbackRack() as loopback:
        loopback.serve("x86", 2, threads=1)
        rack = Rack(parse_address(loopback.tracker), "x86", job_timeout_s=600, wait_s=600, retries=0)
        latency = []
        for name in args.models:
            model = load_model(name, cache, 1)
            inputs = model.samples(1)[:1]
            library = build_tvm(model, remote_x86, "torch", cache).library
            local_ms = time_call(_bound_locally(library, inputs[0]), 5, REPEATS).median_ms
            kit = rack.run(KitJob(name, library, inputs, 5, REPEATS, "x86_64"))
            latency.append({"model": name, "local_ms": local_ms, "kit_ms": kit.latency.median_ms,
                            "ratio": kit.latency.median_ms / local_ms, "upload_s": kit.upload_seconds})

        # Throughput: the same small job, many times, first with one kit free, then two.
        model = load_model(args.job_model, cache, 1)
        library = build_tvm(model, remote_x86, "torch", cache).library
        jobs = [KitJob(f"job {i}", library, model.samples(1)[:1], 5, REPEATS, "x86_64") for i in range(args.jobs)]
        throughput = {}
        for kits in (1, 2):
            one_key = f"bench-{kits}"
            loopback.serve(one_key, kits, threads=1)
            sized = Rack(parse_address(loopback.tracker), one_key, job_timeout_s=600, wait_s=600, retries=0)
            outcomes = []
            started = time.perf_counter()
            sized.run_all(jobs, lambda _job, outcome: outcomes.append(outcome))
            seconds = time.perf_counter() - started
            failed = [str(o) for o in outcomes if isinstance(o, Exception)]
            if failed:
                raise SystemExit(f"jobs failed with {kits} kit(s): {failed}")
            throughput[kits] = {"seconds": seconds, "jobs_per_hour": 3600 * len(jobs) / seconds}

    table = Table(title=f"the same module, local vs on a kit over loopback RPC (medians of {REPEATS}, 1 thread)")
    for col in ("model", "local ms", "kit ms", "kit / local", "upload s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in latency:
        table.add_row(r["model"], f"{r['local_ms']:.3f}", f"{r['kit_ms']:.3f}", f"{r['ratio']:.2f}x", f"{r['upload_s']:.2f}")
    console.print(table)
    jobs_table = Table(title=f"{args.jobs} jobs of {args.job_model} ({REPEATS} repeats each), spread by the tracker")
    for col in ("kits", "seconds", "jobs per hour"):
        jobs_table.add_column(col, justify="right")
    for kits, t in throughput.items():
        jobs_table.add_row(str(kits), f"{t['seconds']:.1f}", f"{t['jobs_per_hour']:.0f}")
    console.print(jobs_table)
    console.print("each job asks the tracker for a kit, uploads, checks outputs and times on the kit (one thread); "
                  "two kits share this host's two cores", style="dim")
    print(json.dumps({
        "rpc_over_local": round(latency[0]["ratio"], 3),
        "rpc_over_local_by_model": {r["model"]: round(r["ratio"], 3) for r in latency},
        "two_kits_over_one": round(throughput[2]["jobs_per_hour"] / throughput[1]["jobs_per_hour"], 3),
        "jobs_per_hour": {str(k): round(t["jobs_per_hour"], 1) for k, t in throughput.items()},
    }))


if __name__ == "__main__":
    last_line.run(main)

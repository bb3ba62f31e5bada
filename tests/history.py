"""Seeded synthetic histories written through the real Store: nights of raw samples whose noise
and steps are known, so verdicts can be checked against the truth."""

from __future__ import annotations

import copy

import numpy as np

from tvmharness.provenance import snapshot
from tvmharness.results import Store

WITHIN_RUN_SIGMA = 0.03  # spread of one run's samples
NIGHT_SIGMA = 0.015  # night-to-night drift of a series' level


def night(store: Store, level_ms: float, rng: np.random.Generator, *, model: str = "m", engine: str = "tvm",
          versions: dict | None = None, tuning_sha: str = "a" * 64, git: str = "c0ffee", recipe: dict | None = None,
          confirms: int | None = None, **row) -> int:
    """One run with one row, its samples drawn around `level_ms` times that night's drift
    (`confirms`: the run it measures again, as a nightly's confirmation does). A night at another level
    is of another build, as a TVM row's step is: a host's slow spell on one build gives its build_key."""
    prov = copy.deepcopy(snapshot())
    prov["versions"].update(versions or {})
    prov["git_commit"] = git
    if confirms is not None:
        prov["confirms_run"] = confirms
    run_id = store.start_run("nightly", "h" * 16, recipe or {}, prov)
    drift = float(np.exp(rng.normal(0.0, NIGHT_SIGMA)))
    samples = (level_ms * drift * np.exp(rng.normal(0.0, WITHIN_RUN_SIGMA, 30))).round(6).tolist()
    data = {"model": model, "variant": "fp32", "target": "x86", "engine": engine, "engine_version": "0.27.0",
            "status": "ok", "threads": 2, "batch": 1, "samples_ms": samples, "median_ms": float(np.median(samples)),
            "p90_ms": float(np.percentile(samples, 90)), "iqr_ms": float(np.subtract(*np.percentile(samples, [75, 25]))),
            "artifact_bytes": 100_000, "accuracy": 0.97, "top1_agreement": 1.0, "max_abs_diff": 1e-6,
            "target_spec": {"tvm": {"kind": "llvm", "mcpu": "znver5"}, "runs_on": "local"},
            "details": {"tuning_records": {"sha256": tuning_sha, "tasks": 10, "tasks_tuned": 10, "trials": 64,
                                           "dir": "results/tuning/x86"}, "build_key": f"{git}{tuning_sha[:4]}@{level_ms:g}"},
            "profile_ms": {"conv2d": 0.5 * level_ms, "matmul": 0.3 * level_ms, "add": 0.01}}
    data.update(row)
    store.add(run_id, data)
    store.finish_run(run_id)
    return run_id

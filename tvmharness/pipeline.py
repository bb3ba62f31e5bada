"""Run a recipe: models x variants x targets x engines, each row measured against the fp32 baseline
of the same run and stored as soon as it is measured. A row that fails does not stop the others."""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from .build import Artifact, load_artifact
from .cache import stage_dir, writable_folder
from .compress import NotApplicable, apply_variant, baseline_metrics, check_variants, parse_variant
from .data import GIVEN_RANGE
from .engines import EngineOptions, get_engine
from .errors import FAILED, HarnessError, Interrupted, counted, one_line, reason
from .gpu import check_local_gpu, cuda_status, ort_cuda_status, torch_cuda_status
from .export import pt2_file
from .frontend import known_faults
from .measure import accuracy, agreement, exact_output, paired_p, time_call, time_interleaved, top1_agreement
from .memory import ENGINES as MEMORY_ENGINES, measure_memory
from .models import LoadedModel, ModelNotMade, attach_data, check_input_settings, check_spec, load_model, model_name
from .provenance import snapshot, worker_environment_kept
from .recipe import Recipe, apply_overrides, parse_duration, recipe_from_dict
from .results import (BASELINE, BUILD_FAILED, COMPRESS_FAILED, DISAGREES, DROPS, LOAD_FAILED, NOT_APPLICABLE, OK,
                      RUN_FAILED, Store, StoreError, UnsavedRows, hides_password, plain, same_build,
                      store_folder_writable, variant_drop)
from .remote.rack import KitFailure, KitJob, KitResult, Rack, resolve_key
from .remote.tracker import parse_address, probe
from .targets import Target, check_local_cpu, check_toolchain, host_target, resolve_all

HOST_ENGINES = ("torch", "torch-compile", "onnxruntime")
AB_ENGINES = ("tvm", "tvm-untuned")  # an earlier build loads beside tonight's: confirmed by an A/B
UNSTEADY = 1.5  # a quarter of the samples this far above the fastest tenth: the host was busy, not the model


class Progress(Protocol):
    def step(self, text: str) -> None: ...
    def repeat(self, done: int, total: int) -> None: ...


class _Silent:
    def step(self, text: str) -> None:
        pass

    def repeat(self, done: int, total: int) -> None:
        pass


@dataclass
class RunResult:
    """A run as run_recipe returns it: `rows`, each as stored (the columns of `frame()`, which reads them
    back from the store); `failed`, those that failed or disagree; `unsaved`, rows the store refused, kept
    in a file for `tvmharness store load`; `provenance`, the run's own (host, versions, git commit)."""

    run_id: int
    recipe: Recipe
    store: Store
    provenance: dict
    unsaved: UnsavedRows
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    finished: datetime | None = None  # when it ended, as the store or the file of rows it refused records it

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] not in (OK, NOT_APPLICABLE)]

    def frame(self):
        """The run's rows as the store gives them back. Where it refused some, the rows as measured, read back
        through a store in memory (the same columns, joined the same way: the store itself may not answer), each
        with `stored`, whether the store holds it, and the store's id (none yet for a refused row)."""
        if self.unsaved.path is None:
            frame = self.store.frame(run_id=self.run_id)
            frame["stored"] = True  # the same columns either way, for `--json`'s reader
            return frame
        import pandas as pd

        with Store.holding(self.record(), self.rows) as copy:
            frame = copy.frame(run_id=self.run_id)
        frame["id"] = pd.Series([row["id"] for row in self.rows], dtype=object)  # (object: an int or None, not a float)
        frame["stored"] = [row["id"] is not None for row in self.rows]
        return frame

    def record(self) -> dict:
        """The run's record: the store's, or where it refused rows, the one this run started with, and its end."""
        if self.unsaved.path is None:
            return self.store.run(self.run_id)
        return self.unsaved.run | {"finished": self.finished}


class RowsNotStored(StoreError):
    """A run measured every row, and its store refused some (kept in a file): `result` holds them all, for the run's
    table before this error."""

    def __init__(self, cause: str, fix: str, result: RunResult):
        super().__init__(cause, fix, result.unsaved.problem.exit_code)  # (75 for a lock: `store load` later works)
        self.result = result


def load_models(recipe: Recipe, progress: Progress | None = None,
                unloadable: list[tuple[str, HarnessError]] | None = None, none_left_ok: bool = False) -> list[LoadedModel]:
    """The recipe's models at its input settings, with their [data]; a setting or data set that fits
    none of them is refused. `unloadable`: where given, a model that cannot be made (ModelNotMade: its
    file gone, its import or function failing; not a spec that names no model) goes there as
    (spec, error) and the others go on, unless none can be made (then its error is raised, or with
    `none_left_ok` an empty list is returned)."""
    for spec in recipe.models:  # (each refused before any is loaded: a model trains first)
        check_spec(spec)
    names = [model_name(spec) for spec in recipe.models]
    for i, name in enumerate(names):  # rows, verdicts and history know a model by its name
        if name in names[:i]:
            raise HarnessError(f"models {recipe.models[names.index(name)]} and {recipe.models[i]} are both named "
                               f"'{name}'", "rename one of the files (or functions)")
    unknown = sorted(recipe.names_to_match("data") - set(names))
    if unknown:
        raise HarnessError(f"[data] names {', '.join(repr(n) for n in unknown)}, and the models are called "
                           f"{', '.join(sorted(names))}", "name a model's data by what rows call it: a zoo name, a "
                                                          "file's stem or a function's name")
    models: list[LoadedModel] = []
    for spec in recipe.models:
        (progress or _Silent()).step(f"loading model {spec}")
        try:
            models.append(load_model(spec, recipe.cache_dir, recipe.measure.batch, recipe.input_settings(model_name(spec))))
        except HarnessError as err:
            if unloadable is None or not isinstance(err, ModelNotMade):
                raise
            unloadable.append((spec, err))
    if unloadable and not models and not none_left_ok:
        raise unloadable[0][1]
    entries = {name: recipe.inputs[name] for name in recipe.names_to_match("inputs")}
    if unloadable:  # a lost model's inputs are unknown: its own tables, and names that may be its inputs, go unchecked
        lost = {model_name(spec) for spec, _ in unloadable}
        entries = {name: entry for name, entry in entries.items() if isinstance(entry, dict) and name not in lost}
    check_input_settings(models, entries)
    for model in models:
        attach_data(model, recipe.data[model.name].model_dump() if model.name in recipe.data else {})
    return models


def run_recipe(recipe: Recipe, progress: Progress | None = None, confirms: int | None = None,
               every_night: bool = False) -> RunResult:
    """Validate everything a user can get wrong first, then measure and store row by row.
    `confirms`: the run this one measures again (a nightly's confirmation of a latency change).
    `every_night`: a night of which no model could be made is stored too, as its models' failed rows,
    so that the morning's report is of that night (a run without it says why and stores nothing)."""
    recipe_from_dict(recipe.model_dump(), f"'{recipe.name}'")  # changed in place in code (a list appended to): checked
    writable_folder(recipe.output.dir)  # before anything is imported or built: a failed row per build is no answer
    store_folder_writable(recipe.output.store)  # (its own place: results/ here, whatever --output-dir says)
    try:  # before the run is in the store: nothing to keep, nothing to mark unfinished
        import torch

        progress = progress or _Silent()
        started, torch_threads = time.perf_counter(), torch.get_num_threads()
        threads = recipe.measure.threads
        targets = resolve_all(recipe.target_names(), threads)
        host = host_target(targets, threads)
        for target in targets:
            check_local_gpu(target)
            check_local_cpu(target)
            if any(e not in HOST_ENGINES for e in recipe.engines):  # a compiler missing: said before minutes of building
                check_toolchain(target)
        racks = kit_racks(recipe, targets, progress)
        check_variants(recipe.variants)
        unloadable: list[tuple[str, HarnessError]] = []  # one model that cannot be made costs its rows, not the night
        models = load_models(recipe, progress, unloadable, none_left_ok=every_night)
        for model in models if host.on_gpu else []:
            _check_gpu_baseline(model, host)

        provenance = snapshot() | {"threads": threads, "planned": planned_series(models, targets, host, recipe)} | (
            {"confirms_run": confirms} if confirms is not None else {})
        store = Store(recipe.output.store)
        store.on_wait = progress.step
        run_id = store.start_run(recipe.name, recipe.digest(), recipe.model_dump(mode="json"), provenance)
    except Interrupted:  # said already, by the stage it came in
        raise
    except KeyboardInterrupt:
        raise Interrupted("interrupted before anything was measured: nothing was stored") from None
    result = RunResult(run_id=run_id, recipe=recipe, store=store, provenance=provenance,
                       unsaved=UnsavedRows(store.run(run_id), store.label, store.file))
    options = EngineOptions(frontend=recipe.frontend, cache_dir=recipe.cache_dir, threads=threads,
                            records_root=recipe.records_root)
    kit_rows: list[_KitRow] = []
    for spec, err in unloadable:
        _store(store, result, _unloadable_row(spec, err, host, recipe))
    try:
        with worker_environment_kept():  # the TVM sessions' threads are the run's: a notebook's environment is as it was
            for model in models:
                _run_model(model, targets, host, recipe, options, store, result, progress, kit_rows)
            # Kit jobs run last, in parallel over the free kits, with the host quiet.
            for target_name, rack in racks.items():
                _run_on_kits([k for k in kit_rows if k.row["target"] == target_name], rack, recipe, store, result, progress)
    except KeyboardInterrupt as stop:
        if isinstance(stop, Interrupted) and result.unsaved.path is None:  # said by the stage it came in
            raise
        raise _interrupted(result, store) from None
    except Exception as err:  # whatever stopped the run, the rows kept aside are said
        if result.unsaved.path is not None:
            raise HarnessError(f"{reason(err)}; {_unsaved_said(result)}", f"{_load_command(result, store)} puts them "
                               "in once the store takes writes again",
                               exit_code=getattr(err, "exit_code", FAILED)) from err
        raise
    finally:
        result.seconds = time.perf_counter() - started
        torch.set_num_threads(torch_threads)  # the torch engine's threads are the run's: a notebook's own are as they were
    try:
        result.finished = store.finish_run(run_id)  # only a run that went through: one cut short stays unfinished, and reports say so
        if result.unsaved.rows:  # the store takes writes again (a lock let go, a server back): the rows it refused go in
            store.load_unsaved(result.unsaved)
            progress.step(f"stored the {counted(len(result.unsaved.rows), 'row')} the results store refused while it was "
                          f"{'locked' if result.unsaved.problem.locked else 'unwritable'}: it takes writes again")
            with contextlib.suppress(OSError):  # (stored: a file left is loaded as rows already there)
                result.unsaved.path.unlink()
            result.unsaved = UnsavedRows(store.run(run_id), store.label, store.file)
    except StoreError as err:
        result.unsaved.keep_finished(err, recipe.output.dir)
        result.finished = result.finished or result.unsaved.finished
    except KeyboardInterrupt:  # waiting for the store at the end: every row is measured, some kept aside or not
        raise _interrupted(result, store) from None
    if result.unsaved.path is not None:
        problem = result.unsaved.problem
        raise RowsNotStored(f"{problem.cause}; {_unsaved_said(result)}", problem.fix.removesuffix(", then run again") +
                            f"; then {_load_command(result, store)} puts them in (with --store, into another store)", result)
    return result


def _interrupted(result: RunResult, store: Store) -> Interrupted:
    """What a run cut short kept: its rows stored (the run marked unfinished), or those the store refused, where."""
    if result.unsaved.path is not None:
        return Interrupted(f"interrupted: {_unsaved_said(result)} ({_load_command(result, store)} puts them in once "
                           "the store takes writes again)")
    return Interrupted(f"interrupted: {counted(len(result.rows), 'row')} measured in run {result.run_id} "
                       f"{'is' if len(result.rows) == 1 else 'are'} stored, and the run is marked unfinished "
                       "(every report says so)")


def _load_command(result: RunResult, store: Store) -> str:
    """The command that puts kept rows in; a store URL's password is given again (the file does not keep it)."""
    return f"`tvmharness store load {result.unsaved.path}" + (" --store URL` (the store's URL with its password, which the file does not keep)"
                                                            if hides_password(store.label) else "`")


def _unsaved_said(result: RunResult) -> str:
    kept = result.unsaved
    if not kept.rows:
        return f"the end of run {result.run_id} could not be recorded in {kept.store_label}; it is kept in {kept.path}"
    return (f"{counted(len(kept.rows), 'row')} of {len(result.rows)} measured in run {result.run_id} could not be stored"
            f" in {kept.store_label}, and {'is' if len(kept.rows) == 1 else 'are'} kept in {kept.path}")


def _check_gpu_baseline(model: LoadedModel, host: Target) -> None:
    """The baseline runs on the first local target; on a GPU it needs its engine's GPU build, and
    without a baseline no other row of the model could be measured."""
    usable, why = torch_cuda_status() if model.baseline_engine == "torch" else ort_cuda_status()
    if not usable:
        raise HarnessError(f"the baseline of {model.name} ({model.baseline_engine}) runs on target {host.name}, and "
                           f"{why}", "install the GPU builds (README 'GPU machines'), or name a CPU target first "
                           "(--target x86 --target " + host.name + ") so the baseline runs there")


def confirm_latency(recipe: Recipe, run_id: int, moved: list[tuple[dict, int | None]],
                    progress: Progress | None = None) -> None:
    """Measure again the series whose latency moved in run `run_id` (each: its series key and the
    run it was compared with), in runs stored as confirmations of it (provenance `confirms_run`).

    A TVM build measured on this host gets an A/B: it and the build of the run it was compared
    with, both loaded here and timed in turns (time_interleaved), so a spell of host load, which
    can last minutes, slows both alike and only a change of the build remains. Where that is not
    possible (the earlier build is gone from the cache; PyTorch or ONNX Runtime, whose earlier
    versions cannot load beside tonight's; a dev kit), the recipe is run again for those series'
    models, variants and engines."""
    progress = progress or _Silent()
    store = Store(recipe.output.store)
    store.on_wait = progress.step
    rows = store.frame().to_dict("records")

    def row_of(run: int | None, series: dict) -> dict | None:
        return next((r for r in rows if r["run_id"] == run and all(r[k] == v for k, v in series.items())), None)

    pairs, again = [], []
    for series, previous_run in moved:
        tonight, before = row_of(run_id, series), row_of(previous_run, series)
        builds = _ab_builds(tonight, before, recipe.cache_dir)
        if builds is None:
            again.append(series)
        else:
            pairs.append((series, tonight, before, *builds))
    if pairs:
        confirmation = store.start_run(recipe.name, recipe.digest(), recipe.model_dump(mode="json"),
                                       snapshot() | {"threads": recipe.measure.threads, "confirms_run": run_id})
        try:
            models: dict[str, LoadedModel] = {}
            # the recipe's targets by name, resolved once: a preset file's is no built-in's of that name
            targets = {t.name: t for t in resolve_all(recipe.target_names(), recipe.measure.threads)}
            for series, tonight, before, build, earlier in pairs:
                row = _measure_ab(tonight, before, build, earlier, recipe, models, targets, progress)
                if row is None:
                    again.append(series)
                else:
                    store.add(confirmation, row)
        finally:
            store.finish_run(confirmation)  # judged only as the second measurement of its run
    if again:  # those series' models x variants x engines: a little more than they, never the whole recipe
        wanted = {key: {s[key] for s in again} for key in ("model", "variant", "engine")}
        run_recipe(apply_overrides(recipe, models=[m for m in recipe.models if model_name(m) in wanted["model"]],
                                   variants=[v for v in recipe.variants if parse_variant(v).name in wanted["variant"]],
                                   engines=[e for e in recipe.engines if e in wanted["engine"]]),
                   progress, confirms=run_id)


def _ab_builds(tonight: dict | None, before: dict | None, cache_dir: Path):
    """(tonight's artifact, the earlier one) when both are TVM builds for this host still in the cache
    and run in the same TVM at the same threads: the earlier build is loaded in tonight's runtime, so
    a change of TVM itself (or of threads) would slow or speed both sides, and only a second run sees it.
    The same build on both sides is None: that library timed against itself confirms nothing, and a second
    run does (where nothing but the host's load moved, the verdict already calls the move the host's)."""
    if tonight is None or before is None or tonight["engine"] not in AB_ENGINES:
        return None
    if plain(tonight.get("threads")) != plain(before.get("threads")) or tonight.get("engine_version") != before.get("engine_version"):
        return None
    if (tonight.get("target_spec") or {}).get("runs_on") != "local":  # as the row's target was resolved
        return None
    if same_build(tonight, before):
        return None
    found = [_cached_build(row, cache_dir) for row in (tonight, before)]
    return None if None in found else tuple(found)


def _cached_build(row: dict, cache_dir: Path) -> Artifact | None:
    """A row's build as this run's cache holds it, found by the row's build key: never by the folder the
    row names, since loading a library runs its code, and whoever can write a shared store's rows could
    name any file on this host. A build not in this cache is None (measured again instead)."""
    key = (row.get("details") or {}).get("build_key")
    if not isinstance(key, str) or not re.fullmatch(r"[0-9a-f]{16}", key):  # a folder name, nothing more
        return None
    artifact = load_artifact(stage_dir(cache_dir, "tvm", key))
    return artifact if artifact is not None and artifact.manifest.get("build_key", "").startswith(key) else None


def _measure_ab(tonight: dict, before: dict, build: Artifact, earlier: Artifact, recipe: Recipe,
                models: dict[str, LoadedModel], targets: dict[str, Target], progress: Progress) -> dict | None:
    """Tonight's build and the earlier one timed in turns on the input the night was measured on:
    tonight's row again, with this window's samples of both; None when the model is not in the
    recipe any more or a build does not run (then the series is measured again instead)."""
    if tonight["model"] not in models:  # a model that cannot be made tonight has no build to A/B
        models.update((m.name, m) for m in load_models(recipe, unloadable=[]))
    if tonight["model"] not in models:
        return None
    label = f"{tonight['model']} / {tonight['variant']} / {tonight['target']} / {tonight['engine']}"
    progress.step(f"A/B of {label}: this build and run {before['run_id']}'s, in turns")
    m = recipe.measure
    try:
        feed = models[tonight["model"]].samples(m.agreement_samples)[0]
        engine, target = get_engine(tonight["engine"]), targets[tonight["target"]]
        calls = [engine.open(a, target, m.threads).bind(feed) for a in (build, earlier)]
        latency, reference = time_interleaved(calls, m.warmup, m.repeats, m.span_s, progress.repeat)
    except Exception as err:
        progress.step(f"A/B of {label} failed ({type(err).__name__}: {one_line(err)}); measuring it again instead")
        return None
    row = {k: plain(tonight[k]) for k in ("model", "variant", "target", "engine", "engine_version", "is_baseline",
                                           "threads", "batch", "artifact_bytes", "tuned", "target_spec")}
    row.update(status=OK, median_ms=latency.median_ms, p90_ms=latency.p90_ms, iqr_ms=latency.iqr_ms,
               samples_ms=latency.samples_ms)
    row["details"] = {k: tonight["details"].get(k) for k in ("build_key", "artifact_dir", "tuning_records", "compression",
                                                              "model_digest", "inputs", "data")} | {
        "span_s": m.span_s, "other_load": latency.other_load,
        "ab_reference": {"run_id": int(before["run_id"]), "build_key": before["details"].get("build_key"),
                         "artifact_dir": str(earlier.dir), "samples_ms": reference.samples_ms}}
    return row


def _run_model(model: LoadedModel, targets: list[Target], host: Target, recipe: Recipe, options: EngineOptions,
               store: Store, result: RunResult, progress: Progress, kit_rows: list["_KitRow"]) -> None:
    inputs = model.samples(recipe.measure.agreement_samples)
    baseline_engine = model.baseline_engine
    model.compression = baseline_metrics(model)
    baseline = _measure(model, BASELINE, host, baseline_engine, True, inputs, None, recipe, options, progress)
    reference = baseline.pop("_outputs", None)
    # (target, engine) -> the fp32 row's bound call there: the variants after it are timed in turns with it
    fp32_calls = {(host.name, baseline["engine"]): baseline.pop("_call", None)}
    if model.cache_hit is not None:
        baseline["details"]["trained_model_from_cache"] = model.cache_hit
    others = len(recipe.variants) > 1 or len(targets) > 1 or any(e != baseline_engine for e in recipe.engines)
    if reference is None and others:  # no baseline, nothing to compare with: the row says what else went unmeasured
        baseline["reason"] = (f"{baseline['reason']}; so {model.name}'s other rows were not measured (each is judged "
                              "against this one)").lstrip("; ")
    _store(store, result, baseline)
    if reference is None:
        return
    # (target, engine) -> the fp32 row there: what variants' sizes and speed-ups are relative to
    fp32_rows: dict[tuple[str, str], dict] = {(host.name, baseline["engine"]): baseline}
    for spec in recipe.variants:
        variant = parse_variant(spec)
        progress.step(f"compressing {model.name}: {variant.name}")
        try:
            variant_model = apply_variant(model, variant, recipe.cache_dir)
            # Each compiled variant must agree with its own uncompressed-engine run; compression's
            # own effect is measured against fp32 (accuracy, top-1 agreement).
            own = reference if variant.is_baseline else _own_reference(variant_model, host, inputs, options)
            _check_output_shapes(own, reference, variant.name)
        except Exception as err:  # a technique that fails is that variant's row, not the run's end
            status = NOT_APPLICABLE if isinstance(err, NotApplicable) else COMPRESS_FAILED
            failed = _empty_row(model, variant.name, host)
            for key in model.compression:  # fp32's figures are not the variant's; its config is
                failed["details"].pop(key, None)
            failed["details"]["compression"] = variant.config()
            _store(store, result, _failed(failed, status, err))
            continue
        for target, engine in _cells(variant.is_baseline, baseline_engine, targets, host, recipe.engines):
            if engine.startswith("torch") and variant_model.torch_module is None:
                _store(store, result, _empty_row(variant_model, variant.name, target, engine) | {
                    "status": NOT_APPLICABLE, "reason": "PyTorch cannot run an ONNX model: " + (
                        "this model was given as one" if variant.is_baseline else
                        f"variant {variant.name} is one (ONNX Runtime's quantizer makes ONNX)")})
                continue
            compare = _Comparison(variant.is_baseline, own, reference, baseline, fp32_rows)
            if target.preset.runs_on == "rpc":
                kit_row = _build_for_kit(variant_model, variant.name, target, engine, inputs, compare, recipe,
                                         options, progress)
                if isinstance(kit_row, _KitRow):
                    kit_rows.append(kit_row)
                else:
                    _store(store, result, kit_row)
                continue
            fp32_call = None if variant.is_baseline else fp32_calls.get((target.name, engine))
            row = _measure(variant_model, variant.name, target, engine, False, inputs, own, recipe, options, progress,
                           fp32_call)
            call = row.pop("_call", None)
            compare.apply(row, row.pop("_outputs", None), variant_model, recipe)
            if variant.is_baseline and row["status"] == OK:
                fp32_calls[(target.name, engine)] = call
            _store(store, result, row)


def _cells(is_baseline: bool, baseline_engine: str, targets: list[Target], host: Target, engines: list[str]):
    """The (target, engine) rows of a variant, beside its model's baseline row: host engines (PyTorch,
    ONNX Runtime) once on the host, and again on each local GPU target (the GPU baselines);
    compilers on every target."""
    local_gpus = [t for t in targets if t.on_gpu and t.preset.runs_on == "local" and t is not host]
    for target in targets if host in targets else [host, *targets]:
        for engine in engines:
            on_host = engine in HOST_ENGINES
            if on_host and target is host and engine == baseline_engine and is_baseline:
                continue  # the baseline row itself
            if (on_host and target is not host and target not in local_gpus) or (not on_host and target not in targets):
                continue
            yield target, engine


def planned_series(models: list[LoadedModel], targets: list[Target], host: Target, recipe: Recipe) -> list[list[str]]:
    """Every row a run means to measure, [model, variant, target, engine]: what one cut short did not
    reach is named from it."""
    plan = []
    for model in models:
        plan.append([model.name, BASELINE, host.name, model.baseline_engine])
        for spec in recipe.variants:
            variant = parse_variant(spec)
            plan += [[model.name, variant.name, t.name, e]
                     for t, e in _cells(variant.is_baseline, model.baseline_engine, targets, host, recipe.engines)]
    return plan


@dataclass
class _Comparison:
    """What a variant's row is judged against: its own model on its reference engine (do the
    engines agree?), fp32 (what did compression cost?), the baseline and the fp32 row on the same
    target and engine (how much faster and smaller?)."""

    is_fp32: bool
    own: list
    fp32_outputs: list
    baseline: dict
    fp32_rows: dict[tuple[str, str], dict]

    def apply(self, row: dict, outputs, model: LoadedModel, recipe: Recipe) -> None:
        if not self.is_fp32 and outputs is not None:
            try:
                fidelity = agreement(self.fp32_outputs, outputs, recipe.measure.tolerance)
            except ValueError:  # outputs of other shapes: the row already disagrees with its own reference
                pass
            else:
                row["top1_agreement"] = fidelity.top1_agreement  # compression's effect: against fp32
                # NaN or an infinity where fp32 has a number (an fp16 overflow): no figure, which JSON could not hold
                row["details"]["max_abs_diff_vs_fp32"] = fidelity.max_abs_diff if math.isfinite(fidelity.max_abs_diff) else None
                row["details"]["max_abs_diff_reference"] = "the variant run by " + model.baseline_engine
        key = (row["target"], row["engine"])
        if self.is_fp32 and row["status"] == OK:
            self.fp32_rows[key] = row
        _compare_with_baseline(row, self.baseline, recipe, self.fp32_rows.get(key))


def _check_output_shapes(outputs: list, fp32_outputs: list, variant: str) -> None:
    """A variant must give the outputs fp32 gives: channel pruning can shrink an output that is
    also an inner layer's result (a model returning its features)."""
    got, want = [o.shape for o in outputs[0]], [o.shape for o in fp32_outputs[0]]
    if got != want:
        raise NotApplicable(f"variant {variant} changes the model's outputs from shapes {[list(s) for s in want]} to "
                            f"{[list(s) for s in got]}", "leave it out for this model; unstructured pruning (prune:0.5) "
                            "keeps every shape")


def _own_reference(model: LoadedModel, host: Target, inputs, options: EngineOptions) -> list:
    """A compressed model's outputs on its reference engine: PyTorch eager, or ONNX Runtime for an
    ONNX (int8) variant. Compiled rows must agree with these within the tolerance."""
    session = get_engine(model.baseline_engine).prepare(model, host, options)
    return [session.run(x) for x in inputs]


def _empty_row(model: LoadedModel, variant: str, target: Target, engine: str = "—") -> dict:
    """A row with nothing measured: a variant that could not be made, or an engine that does not apply."""
    return {"model": model.name, "variant": variant, "target": target.name, "engine": engine, "engine_version": "",
            "is_baseline": False, "batch": model.batch, "status": OK, "reason": "",
            "target_spec": target.describe(), "details": {"notes": list(model.notes), "model_digest": model.digest,
                                                          "inputs": [i.describe() for i in model.inputs],
                                                          "data": data_provenance(model), **model.compression}}


def data_provenance(model: LoadedModel) -> dict:
    """Which samples a row's outputs and accuracy (eval) and its variant's training and calibration
    (train, where its variant trains or calibrates) came from, by the hash of their arrays (not of the
    file); seeded inputs where there were none."""
    roles = [("eval", model.eval_data)] + ([("train", model.train_data)] if model.compression.get("uses_train_data") else [])
    return {role: {"source": d.source, "content_hash": d.digest[:16]} if d is not None else None for role, d in roles}


def _unloadable_row(spec: str, err: HarnessError, host: Target, recipe: Recipe) -> dict:
    """The baseline row of a model that could not be made: its series is broken, with the reason."""
    return {"model": model_name(spec), "variant": BASELINE, "target": host.name, "is_baseline": True,
            "engine": "onnxruntime" if spec.endswith(".onnx") else "torch", "engine_version": "",
            "batch": recipe.measure.batch, "status": LOAD_FAILED, "reason": reason(err), "target_spec": host.describe(),
            "details": {"model_spec": spec}}


def _failed(row: dict, status: str, err: Exception) -> dict:
    """The row, failed with the error as its reason: a user's error as it is, a crash with its type."""
    return row | {"status": status, "reason": reason(err)}


def _store(store: Store, result: RunResult, row: dict) -> None:
    interrupted = row.pop("_interrupted", False)
    row["created"] = datetime.now(timezone.utc)  # its time in the store, or in the file of rows the store refused
    try:
        if result.unsaved.rows and result.unsaved.problem.locked:  # no second minute's wait per row; tried at the end
            raise result.unsaved.problem
        row["id"] = store.add(result.run_id, row)
    except StoreError as err:  # the run goes on; the row waits in a file
        row["id"] = None  # handled: a kit row handed over again after a Ctrl-C is not kept twice
        result.unsaved.keep(row, err, result.recipe.output.dir)
    except KeyboardInterrupt:  # (waiting for another process's lock): the row measured is kept, and the run stops
        row["id"] = None
        result.unsaved.keep(row, StoreError(f"the run was interrupted while it wrote to the results store {store.label}",
                                            "run again"), result.recipe.output.dir)
        result.rows.append(row)
        raise
    result.rows.append(row)
    if interrupted:
        raise KeyboardInterrupt


def _row(model: LoadedModel, variant: str, target: Target, engine, is_baseline: bool) -> dict:
    return _empty_row(model, variant, target, engine.name) | {"engine_version": engine.version(), "is_baseline": is_baseline}


def _measure(model: LoadedModel, variant: str, target: Target, engine_name: str, is_baseline: bool,
             inputs, reference, recipe: Recipe, options: EngineOptions, progress: Progress, fp32_call=None) -> dict:
    """A row measured: built (or loaded), its outputs checked, timed; with `fp32_call` (the fp32 row's
    bound call on the same target and engine) timed again in turns with it, for its speed-up over
    fp32. The row's own bound call comes back as row["_call"] where it ran: the caller keeps an fp32
    row's, to time the variants after it against."""
    engine = get_engine(engine_name)
    row = _row(model, variant, target, engine, is_baseline)
    label = f"{model.name} / {variant} / {target.name} / {engine.name}"
    progress.step(f"preparing {label}")
    clock = time.perf_counter()
    try:
        session = engine.prepare(model, target, options)
    except Exception as err:  # a compiler crash is a row's failure, not the run's
        return _failed(row, BUILD_FAILED, err)
    row["details"]["prepare_seconds"] = round(time.perf_counter() - clock, 3)
    row.update(threads=session.threads, artifact_bytes=session.artifact_bytes, cache_hit=session.cache_hit,
               tuned=session.tuned)
    row["details"].update(session.details, engine_notes=session.notes,
                          artifact=str(session.artifact) if session.artifact else None)
    progress.step(f"measuring {label}" + (" (cached build)" if session.cache_hit else ""))
    clock = time.perf_counter()
    try:
        outputs = [session.run(x) for x in inputs]
        m = recipe.measure
        call = session.bind(inputs[0])
        latency = time_call(call, m.warmup, m.repeats, m.span_s, progress.repeat)
    except Exception as err:
        return _failed(row, RUN_FAILED, _blamed_on_range(model, err, reason(err)) or err)
    if fp32_call is not None:
        progress.step(f"timing {label} and fp32 in turns")
        _time_against_fp32(row, call, fp32_call, recipe, progress)
    row["details"]["measure_seconds"] = round(time.perf_counter() - clock, 3)
    if session.profile is not None:  # after the timing, so the profiler's hook never slows a sample
        try:
            row["profile_ms"] = session.profile()
        except Exception as err:  # a missing profile only loses the operator diff, not the row
            row["details"]["profile_error"] = f"{type(err).__name__}: {one_line(err)}"
    _record_outputs(row, model, latency, outputs, reference, recipe)
    if recipe.measure.memory and not row.get("_interrupted"):
        progress.step(f"measuring the memory of {label} in a process of its own")
        _record_memory(row, model, target, session, inputs[0], options)
    row["_call"] = call
    return row


def _time_against_fp32(row: dict, call, fp32_call, recipe: Recipe, progress: Progress) -> None:
    """A variant and fp32 on its engine, timed in turns (time_interleaved): a spell of host load between
    their own rows' windows moves one row's median and not the other's, and a 15% mode switch would
    read as a 1.15x gain; in turns it falls on both. Their medians there give details.speedup_vs_fp32."""
    m = recipe.measure
    try:
        mine, fp32 = time_interleaved([call, fp32_call], m.warmup, m.repeats, m.span_s, progress.repeat)
    except Exception as err:  # the row stands; its speed-up over fp32 comes from the two rows' own windows
        row["details"]["fp32_in_turns_error"] = reason(err)
        return
    except KeyboardInterrupt:  # the row itself is measured: it is stored, then the Ctrl-C goes on (_store)
        row["_interrupted"] = True
        return
    row["details"]["fp32_in_turns"] = {"median_ms": mine.median_ms, "fp32_median_ms": fp32.median_ms,
                                       "samples_ms": mine.samples_ms, "fp32_samples_ms": fp32.samples_ms,
                                       "p_value": paired_p(mine.samples_ms, fp32.samples_ms)}


def _memory_elsewhere(engine: str, target: str) -> str:
    return (f"measured for CPU rows of {', '.join(MEMORY_ENGINES)} (on this host or a dev kit), "
            f"not {engine} on {target}")


def _record_memory(row: dict, model: LoadedModel, target: Target, session, feed, options: EngineOptions) -> None:
    """Peak and resident memory of loading and running the row's artifact in a fresh process (on a
    CPU: a GPU's memory is not the process's)."""
    if target.on_gpu or session.engine not in MEMORY_ENGINES:
        row["details"]["memory_error"] = _memory_elsewhere(session.engine, target.name)
        return
    try:
        artifact = session.artifact if session.engine != "torch" else pt2_file(model, options.cache_dir)
        by_name = {i.name: a for i, a in zip(model.inputs, feed)}
        row["details"]["memory"] = measure_memory(session.engine, artifact, by_name, session.threads)
    except Exception as err:  # a missing figure is said in the row, not a failed row
        row["details"]["memory_error"] = reason(err)
    except KeyboardInterrupt:  # the row's latency is measured: it is stored, then the Ctrl-C goes on (_store)
        row["details"]["memory_error"] = "interrupted (Ctrl-C, SIGTERM or SIGHUP)"
        row["_interrupted"] = True


def _record_outputs(row: dict, model: LoadedModel, latency, outputs, reference, recipe: Recipe) -> None:
    row.update(median_ms=latency.median_ms, p90_ms=latency.p90_ms, iqr_ms=latency.iqr_ms, samples_ms=latency.samples_ms)
    row["details"]["span_s"] = recipe.measure.span_s  # samples spread over seconds of running, or back to back: a setup
    if latency.other_load is not None:  # what else kept the host's CPUs busy meanwhile (a report marks it BUSY)
        row["details"]["other_load"] = latency.other_load
    # Whether most calls waited for something else, or a burst of it held a quarter of them (the median
    # may still read well, and the spread shows hundreds of percent): either way, measure it again.
    if latency.p10_ms and latency.slowest_quarter_ms > UNSTEADY * latency.p10_ms:
        row["details"]["unsteady"] = round(latency.slowest_quarter_ms / latency.p10_ms, 2)
    row["_outputs"] = outputs
    row["details"]["inputs_checked"] = len(outputs)  # what its top-1 agreement (and accuracy) is a share of
    if reference is None:
        row.update(max_abs_diff=0.0, top1_agreement=top1_agreement(outputs, outputs))  # None without classes
    else:
        figures, problem = output_agreement(model, reference, outputs, recipe.measure.tolerance)
        row["details"].update(figures.pop("details", {}))
        row.update(figures)
        if problem:
            fault = known_faults(model, recipe.frontend) if row["engine"].startswith("tvm") else ""
            row.update(status=DISAGREES, reason=problem + (f" ({fault})" if fault else ""))
    if model.eval_labels is not None:
        try:
            row["accuracy"] = accuracy(outputs, model.eval_labels)
        except HarnessError as err:  # labels that do not fit the model's output: the row says so, the run goes on
            row.update(status=RUN_FAILED, reason=str(err))


def model_tolerance(model: LoadedModel, tolerance: float) -> tuple[float, list[float]]:
    """The tolerance a model's outputs are judged by, and each output's floor under it."""
    # A quantized variant's engines may differ by a few quantization steps: it sets a wider tolerance.
    return (max(tolerance, model.compression.get("tolerance") or 0.0),
            model.compression.get("tolerance_floors") or [])  # int8: each output's rounding (quantize._int8_tolerance)


def output_agreement(model: LoadedModel, reference: list, outputs: list, tolerance: float) -> tuple[dict, str | None]:
    """A row's agreement figures (max_abs_diff, top1_agreement, and in details which output) for
    `outputs` against `reference`, and why they disagree (None where they agree)."""
    exact = not model.compression.get("tolerance")  # fp16 and int8 may flip an argmax at a near tie
    tolerance, floors = model_tolerance(model, tolerance)
    try:
        agree = agreement(reference, outputs, tolerance, floors, exact_integers=exact)
    except ValueError as err:
        return {}, f"outputs cannot be compared with the baseline's: {one_line(err)}"
    finite = math.isfinite(agree.max_abs_diff)  # else NaN or an infinity where the baseline has a number
    figures: dict = {"max_abs_diff": agree.max_abs_diff if finite else None, "top1_agreement": agree.top1_agreement}
    which = ""
    if agree.outputs > 1:
        figures["details"] = {"max_abs_diff_output": f"{agree.output + 1} of {agree.outputs}"}
        which = f"output {agree.output + 1} of {agree.outputs}: "
    if not finite:
        return figures, f"{which}NaN or infinite values where the baseline's are finite (or the other way round)"
    if not agree.within_tolerance and exact and exact_output(reference[0][agree.output]) and not (
            agree.output < len(floors) and floors[agree.output]):
        return figures, (f"{which}max abs diff {agree.max_abs_diff:.3g} in integers (or bools), which must match the "
                         "baseline's exactly")
    if not agree.within_tolerance:
        return figures, (f"{which}max abs diff {agree.max_abs_diff:.3g} exceeds the tolerance ({tolerance:g} x that "
                         f"output's largest value in the reference"
                         + (f", or {floors[agree.output]:.3g}: int8's own rounding, three of the output's quantization "
                            "steps or twice how far int8 moves it from fp32, whichever is more"
                            if agree.output < len(floors) and floors[agree.output] else "") + ")")
    return figures, None


def check_artifact(model: LoadedModel, artifact: Artifact, target: Target, recipe: Recipe, options: EngineOptions) -> dict:
    """Run a built artifact here on a few of the model's inputs (its held-out data, or seeded ones)
    against its reference engine (PyTorch, or ONNX Runtime for an ONNX model), as a row of `run` is.
    What was checked, for the manifest ("summary": the line to print); "not checked" with the reason
    where this host cannot run it. Raises HarnessError where they disagree."""
    why_not = _why_not_checked_here(target)
    if why_not:
        return {"checked": False, "summary": f"not checked here: {why_not}"}
    count = recipe.measure.agreement_samples  # a few calls, not all of a held-out set (untuned TVM may be slow)
    inputs = model.samples(count)[:count]
    # the reference on this host's CPU: a GPU target's check needs no GPU build of PyTorch or ONNX Runtime
    try:
        reference = _own_reference(model, host_target([t for t in [target] if not t.on_gpu], options.threads), inputs,
                                   options)
    except Exception as err:  # the model itself fails on these inputs: no artifact could be checked against it
        raise _reference_failed(model, err) from None
    session = get_engine("tvm").open(artifact, target, options.threads)
    figures, problem = output_agreement(model, reference, [session.run(x) for x in inputs], recipe.measure.tolerance)
    engine = model.baseline_engine
    if problem:
        frontend = artifact.manifest["frontend"]
        other = "onnx" if frontend == "torch" else "torch"  # a torch model may go the other way; an ONNX one has only its own
        fault = known_faults(model, frontend)
        fixes = [fault or "`tvmharness bench` shows each engine's rows",
                 *([f"`--frontend {other}` takes another way into TVM"]
                   if not fault and model.torch_module is not None and model.frontend is None else []),
                 "--no-check writes it all the same"]
        raise HarnessError(f"the artifact of {model.name} for {target.name} disagrees with {engine} ({problem}), "
                           "so it was not written", "; ".join(fixes), exit_code=FAILED)
    tolerance, floors = model_tolerance(model, recipe.measure.tolerance)
    return {"checked": True, "summary": f"checked: agrees with {engine} on {counted(len(inputs), 'input')}",
            "reference": engine, "inputs": len(inputs),
            "inputs_from": model.eval_data.source if model.eval_data is not None else "seeded",
            "tolerance": tolerance, "tolerance_of": "each output's largest absolute value in the reference",
            **({"tolerance_floors": floors} if floors else {}), "max_abs_diff": figures["max_abs_diff"]}


def _blamed_on_range(model: LoadedModel, err: Exception, cause: str) -> HarnessError | None:
    """`cause` as the user's values' doing, where `err` is an index past a table's end (an embedding's ids
    past its rows), as PyTorch (IndexError) and ONNX Runtime (Gather's "out of bounds") say it: the range
    given for seeded inputs, else the ids the held-out data feeds; None otherwise."""
    if not (isinstance(err, IndexError) or "out of bounds" in str(err)):
        return None
    if ranges := model.given_ranges():
        return HarnessError(f"{cause} ({ranges}: the range given by {GIVEN_RANGE})",
                            "keep the range within what the model accepts (an embedding's ids below its number of rows)")
    if ranges := model.data_ranges():  # the user's own samples: an id past the vocabulary, a -1 for padding
        return HarnessError(f"{cause} (the likely cause, the ids the held-out data feeds: {ranges})", "keep the "
                            "data's ids within what the model accepts (an embedding's ids from 0 to its number of rows - 1)")
    return None


def _reference_failed(model: LoadedModel, err: Exception) -> HarnessError:
    """The reference engine raising on the inputs an artifact is checked with: the user's range where one
    was given (an embedding's lookup past its rows), else the model."""
    fed = f"its held-out data ({model.eval_data.source})" if model.eval_data is not None else "its seeded inputs"
    cause = (f"the reference engine ({model.baseline_engine}), which {model.name}'s artifact is checked against, raised "
             f"on {fed}: {type(err).__name__}: {one_line(err)}")
    return _blamed_on_range(model, err, cause) or HarnessError(
        cause, "fix the model so that it runs on these inputs, or --no-check writes the artifact unchecked", exit_code=FAILED)


def _why_not_checked_here(target: Target) -> str | None:
    """Why this host cannot run the target's modules, or None where it can."""
    if target.preset.runs_on != "local":
        return (f"{target.name} runs on a dev kit (`tvmharness run` with --target {target.name} --tracker checks it "
                "there)")
    if target.on_gpu:
        status = cuda_status()
        return None if status.usable else status.reason
    missing = target.missing_features()
    if missing:
        return f"this host lacks {', '.join(missing)}, which {target.name}'s CPU ({target.cpu}) has and its code may use"
    return None


# ---------------------------------------------------------------------------------------------
# Dev kits: built here (cross-compiled), measured on a kit the tracker hands out.

@dataclass
class _KitRow:
    row: dict
    job: KitJob
    model: LoadedModel
    compare: _Comparison


def kit_racks(recipe: Recipe, targets: list[Target], progress: Progress) -> dict[str, Rack]:
    """A rack per remote target, checked before anything is measured: the tracker answers, a kit is
    registered under the key, and that kit has the target's architecture (and a GPU for a GPU target)."""
    remote = [t for t in targets if t.preset.runs_on == "rpc"]
    if not remote or all(e in HOST_ENGINES for e in recipe.engines):
        return {}
    devices = recipe.devices
    if not devices.tracker:
        kit = ("`tvmharness devkit emulate aarch64 --tracker 127.0.0.1:9190`"
               if remote[0].preset.arch == "aarch64" and not remote[0].on_gpu  # qemu has no GPU
               else "`tvmharness devkit serve --tracker 127.0.0.1:9190 --key KEY` on the board")
        raise HarnessError(f"target {remote[0].name} runs on dev kits, and no tracker was given",
                           "give the tracker (`--tracker HOST:PORT` on run, bench or tune, or tracker in the recipe's [devices]); "
                           f"then: `tvmharness tracker start` and {kit}")
    address = parse_address(devices.tracker)
    probe(address)
    racks = {}
    for target in remote:
        check_toolchain(target)
        emulable = target.preset.arch == "aarch64" and not target.on_gpu  # the one kit emulated here: a CPU's
        rack = Rack(address, resolve_key(address, devices.key, target.preset.rpc_keys, emulable=emulable),
                    job_timeout_s=parse_duration(devices.job_timeout), wait_s=parse_duration(devices.wait),
                    retries=devices.retries, emulable=emulable)
        progress.step(f"checking a kit under '{rack.key}' at {address} for target {target.name}")
        info = rack.check_kit(target.preset.arch)
        if target.on_gpu and not info.get("cuda"):
            raise HarnessError(f"the kit under '{rack.key}' has no usable CUDA GPU, and target {target.name} runs its "
                               "kernels on one", "serve the kit on the board with TVM's CUDA runtime and the driver "
                               "(JetPack), or pass --key with the key of GPU kits")
        if target.tvm_dict.get("kind") == "llvm" and "num-cores" not in target.tvm_dict and info.get("threads"):
            target.tvm_dict["num-cores"] = info["threads"]  # MetaSchedule needs it; the kit knows it
        target.emulated = info.get("emulated") or ""  # tuning records timed under an emulator stand apart
        racks[target.name] = rack
    return racks


def _build_for_kit(model: LoadedModel, variant: str, target: Target, engine_name: str, inputs, compare: _Comparison,
                   recipe: Recipe, options: EngineOptions, progress: Progress) -> "_KitRow | dict":
    from .engines.tvm import TVMEngine, describe_artifact

    engine = get_engine(engine_name)
    row = _row(model, variant, target, engine, False)
    if not isinstance(engine, TVMEngine):
        return row | {"status": BUILD_FAILED, "reason": f"engine {engine.name} cannot run on a dev kit"}
    progress.step(f"building {model.name} / {variant} for {target.name} (on this host)")
    clock = time.perf_counter()
    try:
        artifact = engine.build(model, target, options)
    except Exception as err:
        return _failed(row, BUILD_FAILED, err)
    notes, details = describe_artifact(artifact)
    row.update(artifact_bytes=artifact.size_bytes, cache_hit=artifact.cache_hit, tuned=artifact.tuned)
    row["details"].update(details, engine_notes=notes, artifact=str(artifact.library),
                          prepare_seconds=round(time.perf_counter() - clock, 3))
    job = KitJob(label=f"{model.name} / {variant} / {target.name} / {engine.name}", library=artifact.library,
                 inputs=inputs, warmup=recipe.measure.warmup, repeats=recipe.measure.repeats, arch=target.preset.arch,
                 span_s=recipe.measure.span_s, device=target.preset.device,
                 memory=recipe.measure.memory and not target.on_gpu)
    return _KitRow(row, job, model, compare)


def _run_on_kits(kit_rows: list[_KitRow], rack: Rack, recipe: Recipe, store: Store, result: RunResult,
                 progress: Progress) -> None:
    by_job = {id(k.job): k for k in kit_rows}
    # A variant's speed-up over fp32 and its size ratio are against its model's fp32 row on the same
    # target and engine, and kits finish in any order: a variant that comes back first waits for that
    # row (or for the end, if it fails).
    def fp32_key(k: _KitRow) -> tuple[str, str, str]:
        return k.row["model"], k.row["target"], k.row["engine"]

    fp32_due = {fp32_key(k) for k in kit_rows if k.compare.is_fp32}
    waiting: dict[tuple[str, str, str], list[tuple[_KitRow, KitResult | KitFailure]]] = {}

    def store_row(pending: _KitRow, outcome: KitResult | KitFailure) -> None:
        row = pending.row
        if "id" in row:  # stored already: handed over again after a Ctrl-C that came as it returned
            return
        row["details"]["rack"] = {"tracker": str(rack.tracker), "key": rack.key}
        row["details"]["kit_seconds"] = outcome.seconds
        if isinstance(outcome, KitFailure):
            row.update(status=RUN_FAILED, reason=reason(rack.error(outcome, pending.job.arch)))
            row["details"].update(kit=outcome.kit, kit_failure=outcome.kind)
        else:
            _record_kit_result(row, outcome, pending, recipe)
        _store(store, result, row)

    def store_outcome(job: KitJob, outcome: KitResult | KitFailure) -> None:
        pending = by_job[id(job)]
        key = fp32_key(pending)
        if not pending.compare.is_fp32 and key in fp32_due:
            waiting.setdefault(key, []).append((pending, outcome))
            return
        store_row(pending, outcome)
        if pending.compare.is_fp32:
            fp32_due.discard(key)
            for held in waiting.pop(key, []):
                store_row(*held)

    try:
        rack.run_all([k.job for k in kit_rows], store_outcome, lambda job, text: progress.step(f"{job.label}: {text}"))
    finally:  # a stopped run still stores every row that came back
        for held in [h for rows in waiting.values() for h in rows]:
            store_row(*held)


def _record_kit_result(row: dict, outcome: KitResult, pending: _KitRow, recipe: Recipe) -> None:
    info = outcome.info
    row.update(threads=info.get("threads"))
    row["details"].update(kit=outcome.kit, kit_info=info, upload_seconds=outcome.upload_seconds)
    built_for = ((row.get("target_spec") or {}).get("tvm") or {}).get("num-cores")
    if built_for and info.get("threads") and built_for != info["threads"]:  # a preset that fixes its cores, another kit
        row["details"]["engine_notes"].append(f"built for {built_for} cores (the target's num-cores), timed on kit "
                                              f"{outcome.kit}'s {info['threads']} threads")
    if outcome.attempts:
        row["details"]["retried_after"] = outcome.attempts
    if outcome.emulated:
        row["details"]["emulated"] = outcome.emulated
        row["details"]["engine_notes"].append(f"emulated by {outcome.emulated}: proves the path, not the kit's speed")
    _record_outputs(row, pending.model, outcome.latency, outcome.outputs, pending.compare.own, recipe)
    if outcome.memory:  # the session's process on the kit, from before the library was loaded
        row["details"]["memory"] = outcome.memory
    elif recipe.measure.memory:
        row["details"]["memory_error"] = outcome.memory_error or _memory_elsewhere(row["engine"], f"{row['target']}'s GPU")
    pending.compare.apply(row, row.pop("_outputs", None), pending.model, recipe)


def _compare_with_baseline(row: dict, baseline: dict, recipe: Recipe, fp32: dict | None = None) -> None:
    """Speed-up over the baseline, size and accuracy against fp32, and whether the row meets the
    recipe's goals. A model without labels has no accuracy: its top-1 disagreement with fp32 (1 - top-1
    agreement) is judged by max_accuracy_drop instead, under its own name; one without classes has neither.
    Sizes compare with the fp32 row of the same target and engine alone (what that engine ships: a
    clustered model's indexed size is its own figure, compressed_bytes, which no engine's artifact
    has); speed-ups with the baseline, and in details with fp32 on the same engine."""
    if row["status"] != OK or not baseline.get("median_ms"):
        return
    details = row["details"]
    row["speedup_vs_baseline"] = baseline["median_ms"] / row["median_ms"]
    in_turns = details.get("fp32_in_turns")
    if in_turns:  # timed in turns with fp32 (_time_against_fp32): the host's load fell on both alike
        details["speedup_vs_fp32"] = in_turns["fp32_median_ms"] / in_turns["median_ms"]
    elif fp32 is not None and fp32 is not row:
        details["speedup_vs_fp32"] = fp32["median_ms"] / row["median_ms"]
    size, reference_bytes = row.get("artifact_bytes"), (fp32 or {}).get("artifact_bytes")
    if size and reference_bytes and fp32 is not row:  # fp32 against itself is no figure, nor a goal to miss
        details["size_ratio"] = size / reference_bytes
    if row.get("accuracy") is not None and baseline.get("accuracy") is not None:
        details["accuracy_drop"] = baseline["accuracy"] - row["accuracy"]
    elif row.get("top1_agreement") is not None:
        details["top1_disagreement"] = 1.0 - row["top1_agreement"]
    what, drop = variant_drop(details) or (None, None)
    goals, misses = recipe.thresholds, []
    if goals.min_speedup is not None and row["speedup_vs_baseline"] < goals.min_speedup:
        misses.append(f"speed-up {row['speedup_vs_baseline']:.2f}x < {goals.min_speedup}x")
    if goals.max_accuracy_drop is not None and drop is not None:
        if drop > goals.max_accuracy_drop + 1e-9:
            misses.append(f"{DROPS[what]} {drop:.3f} > {goals.max_accuracy_drop}")
    if goals.max_size_ratio is not None and details.get("size_ratio") is not None:
        if details["size_ratio"] > goals.max_size_ratio:
            misses.append(f"size {details['size_ratio']:.2f}x of fp32 > {goals.max_size_ratio}x")
    checked = (goals.min_speedup is not None
               or (goals.max_accuracy_drop is not None and drop is not None)
               or (goals.max_size_ratio is not None and details.get("size_ratio") is not None))
    if checked:
        row["meets_goals"] = not misses
        if misses:
            details["goal_misses"] = misses

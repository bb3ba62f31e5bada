"""Tuning: MetaSchedule with its XGBoost cost model and evolutionary search.

Records live per target (results/tuning/<target>-<key>/), in MetaSchedule's JSON database, keyed by
workload (the structural hash of each task), not by model: a second model that shares workloads
starts from what is known and tunes only what is new, and records accumulate run after run. The
record file is append-only, so an interrupted tune loses nothing; `resume` finishes its budget.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from .budgets import BUILDER_TIMEOUT_S, KIT_WAIT_S, PATIENCE, POPULATION, TRIALS
from .cache import content_hash, file_lock, ignored_by_git, process_temp_folder, short_name, written_whole
from .errors import FAILED, FOLDER_REASONS, RETRY, TUNE_RECORDS_KEPT, HarnessError, Interrupted, one_line, path_error
from .frontend import to_relax
from .gpu import check_local_gpu
from .models import LoadedModel
from .native_log import NATIVE_LOG, native_log_note, native_stderr_to
from .provenance import worker_environment, worker_environment_kept
from .remote.tracker import (KITS_GONE, LOST_WORDS, TRACKER_GONE, Address, NoKitError, named_kit, request_kit,
                             start_tracker_again)
from .targets import Target, check_local_cpu

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
STARTS = "sessions/starts.txt"  # the records file's size each time a tune began appending to it
TARGET_FILE = "target.json"
UNREPLAYABLE = "database_tuning_record.unreplayable.json"  # records set aside: kept, never read


# ---------------------------------------------------------------- the records store

def records_dir(root: Path, target: Target) -> Path:
    """One database per resolved target: records for one CPU or thread count do not fit another,
    and MetaSchedule's lookup ignores the target, so the directory is what keeps them apart. So are
    records timed on an emulated kit (TARGET-emulated-HASH): its speeds say nothing of a board's."""
    import tvm

    emulated = ["emulated"] if target.emulated else []
    return Path(root) / f"{_records_prefix(target)}-{content_hash(target.tvm_dict, tvm.__version__, *emulated)[:12]}"


def _records_prefix(target: Target) -> str:
    return f"{target.name}-emulated" if target.emulated else target.name


def _lines(path: Path) -> list[str]:
    return path.read_text().split("\n") if path.is_file() else []


def check_records(directory: Path, target: Target | None = None, locked: bool = False) -> None:
    """Refuse a foreign or corrupt database with a clear message; never modify it.

    The one repair: a last line cut short by a kill during an append is moved to a side file, since
    the next append would otherwise glue a record onto it; every complete record stays (and blank
    lines go: MetaSchedule's loader dies on one). Only a tune (`locked`: it holds the folder) or a
    reader while no tune does may repair: a tune's line being written is not cut short."""
    meta = directory / TARGET_FILE
    if target is not None and meta.is_file():
        try:
            recorded = json.loads(meta.read_text()).get("tvm")
        except (ValueError, AttributeError):
            raise HarnessError(f"{meta} is corrupt: it should name the target these records were tuned for",
                               "it was left untouched: restore it from a copy, or move the folder aside to start afresh") from None
        foreign = f"are for target {recorded}" if recorded != target.tvm_dict else None
    elif target is not None:  # a folder copied without its target file: each record names its target too
        first = next((json.loads(line) for line in _lines(directory / RECORDS) if _parses(line, _valid_record)), None)
        recorded = first[1][2] if first and isinstance(first[1][2], dict) else None  # else: unknown, not foreign
        foreign = (f"(which has no {TARGET_FILE}) were tuned for target "
                   f"{ {k: v for k, v in recorded.items() if k not in ('keys', 'tag')} }"
                   if recorded is not None and any(json.loads(json.dumps(v)) != recorded.get(k)
                                                   for k, v in target.tvm_dict.items() if k != "host") else None)
    if target is not None and foreign:
        raise HarnessError(f"tuning records in {directory} {foreign}, not {target.tvm_dict}",
                           "move that folder aside (or set [output] dir to another folder) to tune this target afresh")
    workloads = 0
    for name, valid in ((WORKLOADS, _valid_workload), (RECORDS, _valid_record)):
        path = directory / name
        lines = _lines(path)
        cut = bool(lines and lines[-1] and not _parses(lines[-1], valid))  # no newline after it: an interrupted append
        blank = "" in lines[:-1]  # an empty file is no line; a blank line is MetaSchedule's loader's crash
        if cut or blank:
            with contextlib.ExitStack() as held:
                if locked or _try_lock(directory, held):
                    if cut:
                        side = path.with_name(path.name + f".interrupted-{int(time.time())}")
                        side.write_text(lines[-1])
                        logging.getLogger(__name__).warning("moved an incomplete last line of %s to %s", path, side)
                    with written_whole(path) as partial:  # every complete record, the last one too
                        partial.write_text("".join(f"{line}\n" for line in (lines[:-1] if cut else lines) if line))
            lines = lines[:-1] if cut else lines
        for number, line in enumerate(lines, start=1):
            if line and not _parses(line, valid):
                raise HarnessError(f"tuning records file {path} is corrupt or foreign at line {number}",
                                   "it was left untouched: restore it from a copy, or move the folder aside to start afresh")
            if line and name == RECORDS and json.loads(line)[0] >= workloads:
                raise HarnessError(f"tuning records file {path} line {number} names workload {json.loads(line)[0]}, "
                                   f"but {WORKLOADS} has only {workloads}", "the two files do not belong together: restore both")
        if name == WORKLOADS:
            workloads = sum(1 for line in lines if line)


def _parses(line: str, valid) -> bool:
    try:
        return valid(json.loads(line))
    except ValueError:
        return False


def _valid_workload(x) -> bool:
    return isinstance(x, list) and len(x) == 2 and all(isinstance(v, str) for v in x)


def _valid_record(x) -> bool:
    return isinstance(x, list) and len(x) == 2 and isinstance(x[0], int) and isinstance(x[1], list) and len(x[1]) == 4


def records_hash(directory: Path) -> str | None:
    """A hash of the whole folder's records, for build keys (a row names those its build read: applied_records_hash)."""
    files = [directory / WORKLOADS, directory / RECORDS]
    if not all(f.is_file() for f in files):
        return None
    return content_hash(*(f.read_bytes() for f in files))


def model_records_hash(directory: Path, workloads: set[str]) -> str | None:
    """A hash of the folder's records of these workloads (a model's: model_workloads), for build keys:
    another model tuned into the folder changes the folder, not them. None: the folder holds none."""
    try:
        workload_lines = (directory / WORKLOADS).read_text().splitlines()
        record_lines = (directory / RECORDS).read_text().splitlines()
    except FileNotFoundError:  # moved away since the folder was hashed
        return None
    keys = []
    for line in workload_lines:
        if line.strip():
            try:
                keys.append(json.loads(line)[0])
            except (ValueError, TypeError, IndexError, KeyError):
                keys.append(None)  # a line cut short (a tune killed, or appending now): no record of it counts
    own = []
    for line in record_lines:
        try:
            index, record = json.loads(line)
        except (ValueError, TypeError):
            continue  # a line cut short: the build's own reading of the folder says what it does with it
        if isinstance(index, int) and 0 <= index < len(keys) and keys[index] in workloads:
            own.append(json.dumps([keys[index], record], sort_keys=True))
    return content_hash(*sorted(own)) if own else None


def records_at_other_threads(root: Path, target: Target,
                             workloads: Callable[[], set[str]] | None = None) -> list[tuple[Path, int]]:
    """Records folders of this target tuned for another thread count: a build here cannot use them
    (records_dir), but whoever tuned at 4 threads and runs at 2 should hear where they are. With
    `workloads` (a model's, model_workloads; asked only once such a folder is found), only folders
    holding records for at least one of them."""
    import tvm

    def without_cores(tvm_dict: dict) -> dict:
        return {k: v for k, v in tvm_dict.items() if k != "num-cores"}

    found = []
    prefix = _records_prefix(target)
    for directory in sorted(Path(root).glob(f"{prefix}-*")):
        records = directory / RECORDS
        if directory.name.rsplit("-", 1)[0] != prefix or not records.is_file() or not records.stat().st_size:
            continue
        try:
            meta = json.loads((directory / TARGET_FILE).read_text())
            tvm_dict, version = meta["tvm"], meta.get("tvm_version")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (version == tvm.__version__ and tvm_dict.get("num-cores") not in (None, target.tvm_dict.get("num-cores"))
                and without_cores(tvm_dict) == without_cores(target.tvm_dict)):
            found.append((directory, tvm_dict["num-cores"]))
    if found and workloads is not None:
        wanted = workloads()
        found = [(directory, cores) for directory, cores in found if _recorded_workloads(directory) & wanted]
    return found


def _recorded_workloads(directory: Path) -> set[str]:
    """The hashes of the workloads a records folder holds records for (none where it cannot be read)."""
    try:
        return set(_record_workloads(directory))
    except (OSError, ValueError, IndexError, TypeError):
        return set()


def _record_workloads(directory: Path, since: int = 0, until: int | None = None) -> list[str]:
    """The workload hash of each record in a records folder, from byte `since` of its records file to
    byte `until` (a record line starts [index, into the workloads file)."""
    hashes = [json.loads(line)[0] for line in _lines(directory / WORKLOADS) if line]
    with open(directory / RECORDS, "rb") as records:
        if since:  # an offset saved before records were set aside may fall inside a line: from the next one
            records.seek(since - 1)
            records.readline()
        start = records.tell()
        lines = (records.read() if until is None else records.read(max(0, until - start))).splitlines()
        return [hashes[int(line[1:line.index(b",")])] for line in lines if line.strip()]


def model_workloads(model: LoadedModel, target: Target, frontend: str, cache_dir: Path) -> set[str]:
    """The structural hashes MetaSchedule's database keys this model's tasks by (the same at any thread
    count): a second or so of lowering. TVM's C++ warnings on the way (an embedding's "Fast mode
    segfaults ...") are the build's own, which logs them: not printed under the progress here."""
    from tvm.s_tir import meta_schedule as ms

    with native_stderr_to(Path(os.devnull)):
        _, mod_zero = lower_for_tuning(to_relax(model, frontend, cache_dir), target)
        tasks = extract_tasks(mod_zero, target)
    return {ms.database.Workload(task.dispatched[0]).as_json()[0] for task in tasks}


def open_database(directory: Path, target: Target, locked: bool = False):
    directory.mkdir(parents=True, exist_ok=True)
    ignored_by_git(directory, [".lock", "sessions/", "runs/", "*.interrupted-*"],
                   f"a tune's own working files; {RECORDS}, {WORKLOADS} and {TARGET_FILE} are the records to keep")
    check_records(directory, target, locked)
    meta = directory / TARGET_FILE
    if not meta.is_file():
        import tvm

        meta.write_text(json.dumps({"target": target.name, "tvm": target.tvm_dict, "tvm_version": tvm.__version__,
                                    **({"emulated": target.emulated} if target.emulated else {})}, indent=2) + "\n")
    database, note = _load_database(directory, locked)
    if note:
        logging.getLogger(__name__).warning("%s", note)
    return database


def _load_database(directory: Path, locked: bool):
    """(MetaSchedule's database of a records folder, a note of records set aside or None). MetaSchedule
    keys a workload by its structural hash, which ignores block names: a task of one model (or variant)
    that differs from another's only in names shares that one's entry, and a trace of it that names
    its own block (an rfactor's "lv5_red") cannot be replayed there. Its loader then refuses the whole
    folder, so such records are moved to a side file, where they are kept, and the rest are read."""
    from tvm.s_tir import meta_schedule as ms

    for _ in range(10):
        try:
            return ms.database.JSONDatabase(work_dir=str(directory)), None
        except Exception as err:  # MetaSchedule's loader raises on any record it cannot read
            failure = one_line(err)
        if locked or not _being_appended(directory):
            break
        time.sleep(0.5)  # a tune's record caught mid-append: it is whole in a moment
    else:
        raise HarnessError(f"a tune is writing {directory}, and its last record stayed cut short while this read it",
                           "run this again in a moment, or once the tune ends")
    unreadable = HarnessError(f"MetaSchedule cannot read the tuning records in {directory}: {failure}",
                              "the files were left untouched: restore them, or move the folder aside")
    bad = _unreplayable_lines(directory)
    if not bad:
        raise unreadable
    with contextlib.ExitStack() as held:
        if not (locked or _try_lock(directory, held)):
            raise HarnessError(f"{len(bad)} tuning records in {directory} cannot be replayed, and a tune is writing "
                               "that folder", "run this again once the tune ends: they are then set aside")
        lines = [line for line in _lines(directory / RECORDS) if line]
        with open(directory / UNREPLAYABLE, "a") as kept:
            kept.write("".join(lines[n - 1] + "\n" for n in bad))
        with written_whole(directory / RECORDS) as partial:
            partial.write_text("".join(line + "\n" for n, line in enumerate(lines, start=1) if n not in bad))
    try:
        database = ms.database.JSONDatabase(work_dir=str(directory))
    except Exception:
        raise unreadable from None
    lines_text = ", ".join(map(str, sorted(bad)[:8])) + (", ..." if len(bad) > 8 else "")
    return database, (f"set aside {len(bad)} of {len(lines)} tuning records that MetaSchedule cannot replay on the "
                      f"workload it filed them under (lines {lines_text} of {RECORDS}; a task of another model or "
                      f"variant the same but for its names) in {directory / UNREPLAYABLE}; the others are used")


def _unreplayable_lines(directory: Path) -> set[int]:
    """The line numbers of the records that do not replay on their workload (a second per few hundred)."""
    from tvm.s_tir import meta_schedule as ms

    try:
        workloads = [ms.database.Workload.from_json(json.loads(line)) for line in _lines(directory / WORKLOADS) if line]
    except Exception:  # a workload itself unreadable: not this repair's to make
        return set()
    bad = set()
    for number, line in enumerate((line for line in _lines(directory / RECORDS) if line), start=1):
        try:
            index, record = json.loads(line)
            ms.database.TuningRecord.from_json(record, workloads[index])
        except Exception:
            bad.add(number)
    return bad


def _being_appended(directory: Path) -> bool:
    """A tune holds the folder and a file's last line is cut short: the record it is appending."""
    cut = any((lines := _lines(directory / name)) and lines[-1] for name in (WORKLOADS, RECORDS))
    with contextlib.ExitStack() as held:
        return cut and not _try_lock(directory, held)


@contextlib.contextmanager
def _exclusive(directory: Path):
    """One tune per records folder at a time: two writers would interleave the append-only file."""
    with contextlib.ExitStack() as held:
        if not _try_lock(directory, held):
            raise HarnessError(f"another tune is writing {directory}", "wait for it to finish", RETRY)
        yield


def _try_lock(directory: Path, held: contextlib.ExitStack) -> bool:
    """The folder's lock, held until `held` closes, if no tune holds it."""
    try:
        return held.enter_context(file_lock(directory / ".lock", wait=False))
    except OSError as err:  # a folder this user may read but not write
        raise HarnessError(f"cannot lock the tuning records folder {directory}: {err.strerror}",
                           "make it writable, or point [output] dir elsewhere") from None


# ---------------------------------------------------------------- lowering shared by tune and build

def lower_for_tuning(mod, target: Target):
    """(mod_pre, mod_zero): the module before fusion (what compile_relax must get, or records silently
    fail to apply to fused functions) and after the zero pipeline (what tasks are extracted from)."""
    import tvm
    from tvm import relax

    tvm_target = target.tvm_target()
    with tvm_target:
        mod_pre = tvm.ir.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                               relax.transform.CanonicalizeBindings()])(mod)
        mod_zero = relax.get_pipeline("zero")(mod_pre)
    return mod_pre, mod_zero


def extract_tasks(mod_zero, target: Target):
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks as ms_extract

    return list(ms_extract(mod_zero, target.tvm_target()))


def applied_records_hash(database, tasks) -> str | None:
    """A hash of the records a build of these tasks can read (each task's workload and its records),
    for provenance: a folder's other models' records are not part of it. None: it has none."""
    parts = []
    for task in tasks:
        mod = task.dispatched[0]
        if database.has_workload(mod):
            workload = database.commit_workload(mod)
            if records := database.get_top_k(workload, 1 << 30):
                parts.append(json.dumps([workload.as_json()[0], [r.as_json() for r in records]]))
    return content_hash(*sorted(parts)) if parts else None


def tuned_task_count(database, tasks, target: Target) -> tuple[int, int]:
    """(tasks with a record the build will apply, trials recorded for the model's workloads)."""
    tvm_target = target.tvm_target()
    tuned = sum(database.query_tuning_record(t.dispatched[0], tvm_target, t.task_name) is not None for t in tasks)
    return tuned, sum(_known(database, t)[0] for t in tasks)


# ---------------------------------------------------------------- tuning

@dataclass
class TaskState:
    name: str
    weight: float
    flop: float
    known_records: int  # records in the database before this tune
    trials: int = 0
    errors: int = 0
    best_s: float | None = None  # best measured time of one call, this tune or before
    first_error: str = ""


@dataclass
class TuneState:
    """What progress shows: trials done of the budget, tasks, best latency per task and for the model."""

    model: str
    target: str
    trials_total: int
    tasks: list[TaskState]
    started: float = field(default_factory=time.perf_counter)
    trials_done: int = 0
    time_budget_s: float | None = None
    stopped: str = ""
    kits_lost: bool = False  # stopped: a batch found no kit (or no tracker) to measure on, so would the next
    # HOST:PORT of the kits that candidates could not reach or open a session on, or lost (killed or hung) while
    # measuring one, since a candidate was last measured
    unreachable_kits: list[str] = field(default_factory=list)
    on_batch: Callable[[], None] | None = None  # after each batch of measurements is counted

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    @property
    def remaining_s(self) -> float | None:
        """The sooner of the time budget and the trial rate's estimate."""
        estimates = []
        if self.trials_done:
            estimates.append(self.elapsed_s / self.trials_done * max(0, self.trials_total - self.trials_done))
        if self.time_budget_s is not None:
            estimates.append(max(0.0, self.time_budget_s - self.elapsed_s))
        return min(estimates) if estimates else None

    @property
    def model_estimate_ms(self) -> float | None:
        """Sum over tasks of weight x best time: the model's latency once every task has a record."""
        if any(t.best_s is None for t in self.tasks):
            return None
        return 1e3 * sum(t.weight * t.best_s for t in self.tasks)


class TuneProgress(Protocol):
    def step(self, text: str) -> None: ...
    def update(self, state: TuneState, task: TaskState | None) -> None: ...


class _SilentTune:
    def step(self, text: str) -> None:
        pass

    def update(self, state: TuneState, task: TaskState | None) -> None:
        pass


@dataclass
class TuneOptions:
    trials: int = TRIALS
    time_budget_s: float | None = None
    patience: int | None = PATIENCE  # None: no stop before the trials or the time budget
    resume: bool = False
    resume_trials: int | None = None  # with resume: the session's new total budget (--trials given)
    builder_timeout_s: float = BUILDER_TIMEOUT_S
    runner_timeout_s: float | None = None  # a candidate's run: None, 30 s here and 120 s on kits (an upload, an emulated kit)
    population: int = POPULATION
    tracker: Address | None = None  # an RPC tracker whose kits measure candidates
    key: str | None = None
    kits: int = 1  # kits under the key: candidates are measured on all of them at once
    kit_wait_s: float = KIT_WAIT_S

    def __post_init__(self):
        if self.trials <= 0:
            raise HarnessError(f"trials must be a positive number, got {self.trials}", "give 1 or more trials")
        if self.runner_timeout_s is None:
            self.runner_timeout_s = 120.0 if self.tracker is not None else 30.0


@dataclass
class TuneResult:
    model: str
    target: str
    records_dir: Path
    records_hash: str | None  # of the records this model's builds read (applied_records_hash), as its rows name them
    tasks: list[TaskState]
    trials_run: int
    seconds: float
    skipped_known: list[str]
    stopped: str
    session: dict
    notes: list[str] = field(default_factory=list)
    emulated: str = ""  # what emulated the kit the candidates were timed on: its records prove the path, not speed

    def summary(self) -> dict:
        return {"model": self.model, "target": self.target, "emulated": self.emulated or None, "records_dir": str(self.records_dir),
                "records_hash": (self.records_hash or "")[:16], "trials_run": self.trials_run,
                "seconds": round(self.seconds, 1), "stopped": self.stopped, "notes": self.notes,
                "skipped_known_tasks": self.skipped_known,
                "tasks": [{"name": t.name, "trials": t.trials, "known_records": t.known_records, "errors": t.errors,
                           "best_ms": None if t.best_s is None else 1e3 * t.best_s, "weight": t.weight}
                          for t in self.tasks]}


def _session_path(directory: Path, model: LoadedModel) -> Path:
    return directory / "sessions" / f"{short_name(model.name)}-{model.digest[:12]}.json"


def tune_model(model: LoadedModel, target: Target, options: TuneOptions, *, frontend: str, cache_dir: Path,
               records_root: Path, threads: int, progress: TuneProgress | None = None) -> TuneResult:
    """Tune a model's tasks for the target, appending to the target's records."""
    with worker_environment_kept():
        os.environ.update(worker_environment())  # (see provenance.SAFE_PATH)
        return _tune_model(model, target, options, frontend=frontend, cache_dir=cache_dir, records_root=records_root,
                           threads=threads, progress=progress)


def _tune_model(model: LoadedModel, target: Target, options: TuneOptions, *, frontend: str, cache_dir: Path,
                records_root: Path, threads: int, progress: TuneProgress | None) -> TuneResult:
    progress = progress or _SilentTune()
    if target.preset.runs_on == "rpc" and not options.tracker:
        raise HarnessError(f"target {target.name} measures tuning candidates on a dev kit, and no tracker was given",
                           "start a tracker and a kit, then pass --tracker HOST:PORT --key KEY")
    check_local_gpu(target)  # its candidates are measured on this machine's GPU
    check_local_cpu(target)  # or its CPU
    directory = records_dir(records_root, target)
    progress.step(f"importing {model.name} for {target.name}")
    os.environ["TVM_NUM_THREADS"] = str(threads)  # the runner's workers inherit it
    _, mod_zero = lower_for_tuning(to_relax(model, frontend, cache_dir), target)
    extracted = extract_tasks(mod_zero, target)
    if not extracted:
        raise HarnessError(f"'{model.name}' has no tunable tasks for {target.name}", "nothing to tune")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:  # a file where the records folder goes
        raise path_error(err) from None
    with _exclusive(directory):
        database = open_database(directory, target, locked=True)
        session_file = _session_path(directory, model)
        known = {t.task_name: _known(database, t) for t in extracted}
        session = _plan_session(session_file, options, extracted, known, directory)
        to_tune = [t for t in extracted if t.task_name in session["tasks"]]
        # The session's own trials, saved after each batch (the records file also gains other models'
        # trials), and any its records show were done after the last save.
        done_before = session["trials_done"] + _unsaved_trials(database, directory, session, to_tune)
        remaining = session["trials"] - done_before
        if not options.resume:
            notes = []
        elif "resumed" in session:
            done = (f"{done_before} of its {session['trials']} trials were done" if done_before < session["trials"] else
                    f"its {done_before} trials reach the {session['trials']} asked, so none are left (--trials more than "
                    "that goes on)")
            notes = [f"resumed the tune started {session['started']}: {done}"]
        else:
            notes = [f"nothing to resume: no interrupted tune of {model.name} in {directory}, so a new one started"]
        for note in notes:
            progress.step(note)
        states = [TaskState(t.task_name, float(t.weight), _flop(t), known[t.task_name][0], best_s=known[t.task_name][1])
                  for t in extracted]
        state = TuneState(model.name, target.name, max(0, remaining), states, time_budget_s=options.time_budget_s)

        def save_progress():
            session["trials_done"] = done_before + state.trials_done
            session["records_bytes_at_save"] = _records_bytes(directory)
            _write_session(session_file, session)

        state.on_batch = save_progress
        skipped = [t.task_name for t in extracted if t.task_name not in session["tasks"]]
        if remaining <= 0 or not to_tune:
            state.stopped = (f"nothing to do: the budget of {session['trials']} trials is spent" if to_tune
                             else "every task already has records")
            progress.update(state, None)
            return _result(model, target, directory, applied_records_hash(database, extracted), states, 0, state, skipped,
                           session, notes)
        progress.step(f"tuning {len(to_tune)} of {len(extracted)} tasks of {model.name}: {remaining} trials "
                      f"(the first batch starts the builder workers: about 30 s)")
        session["start_mark"] = _mark_start(directory)
        _write_session(session_file, session)
        native_log = _run_meta_schedule(database, to_tune, directory, target, options, state, progress, remaining, threads)
        if native_log.is_file() and native_log.stat().st_size:
            notes.append(native_log_note(native_log))
        trials_run = state.trials_done
        ok = sum(t.trials - t.errors for t in states)
        if state.kits_lost:
            save_progress()
            kept = f"the tune stopped after {ok} measured trials (their records are kept)" if ok else "no trial was measured"
            # the kits named where the tracker is up: its outage is the cause to fix
            lost = [] if state.stopped.startswith(TRACKER_GONE) else state.unreachable_kits
            kits = f"the kit{'s' * (len(lost) > 1)} {' and '.join(lost)}"
            if state.stopped.startswith(TRACKER_GONE):
                fix = start_tracker_again(options.tracker)
            elif state.stopped.endswith(KITS_GONE):
                fix = f"start a kit under '{options.key}'"
            else:
                fix = f"free a kit under '{options.key}', or raise wait in the recipe's [devices]"
            if lost:
                fix = f"restart the server of {kits}, or {fix}"
            said = f"{kits} (key {options.key}) stopped answering; " if lost else ""
            raise HarnessError(f"{said}{state.stopped}; {kept}", f"{fix} (`tvmharness devices --tracker {options.tracker}` "
                               "lists the kits), then continue with `tvmharness tune --resume`", exit_code=FAILED)
        session["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        # what builds will read: every record replays (before the last save: setting some aside shortens the file)
        reloaded, set_aside = _load_database(directory, locked=True)
        save_progress()
        if set_aside:
            notes.append(set_aside)
        if trials_run and ok == 0:
            first = next((t.first_error for t in states if t.first_error), "no error message")
            raise HarnessError(f"all {trials_run} tuning trials of {model.name} failed; the first error: {first}",
                               "see the MetaSchedule logs in " + str(directory / "runs") + "; a builder timeout means a slow machine: "
                               "raise [tune] builder_timeout", exit_code=FAILED)
        return _result(model, target, directory, applied_records_hash(reloaded, extracted), states, trials_run, state,
                       skipped, session, notes)


def _records_bytes(directory: Path) -> int:
    records = directory / RECORDS
    return records.stat().st_size if records.is_file() else 0


def _mark_start(directory: Path) -> int:
    """Note where this tune's appends to the records file begin; returns the mark's index. A tune
    killed before it saved its progress owns the records from its last save up to the next mark,
    not those of the tunes after it."""
    marks = _start_marks(directory)
    (directory / STARTS).parent.mkdir(exist_ok=True)
    with open(directory / STARTS, "a") as starts:
        starts.write(f"{_records_bytes(directory)}\n")
    return len(marks)


def _start_marks(directory: Path) -> list[int]:
    return [int(line) for line in _lines(directory / STARTS) if line.strip().isdigit()]


def _unsaved_workloads(directory: Path, session: dict) -> list[str]:
    """The workloads of the records appended from the session's last save until the next tune began
    appending (the next mark after its own, which may sit at that very byte)."""
    since, marks = session["records_bytes_at_save"], _start_marks(directory)
    if "start_mark" in session:
        until = marks[session["start_mark"] + 1] if session["start_mark"] + 1 < len(marks) else None
    else:  # killed before it marked its start: a later mark past its last save
        until = min((m for m in marks if m > since), default=None)
    return _record_workloads(directory, since, until)


def _unsaved_trials(database, directory: Path, session: dict, tasks) -> int:
    """Records of the session's tasks appended after its progress was last saved: MetaSchedule writes a
    batch's records before the callback that saves progress runs, and a kill between the two leaves
    trials the record file holds and the session does not count. The record file is the truth, up to
    where another tune (another model sharing layers, a variant) began appending."""
    since = session.get("records_bytes_at_save")
    if since is None or not (directory / RECORDS).is_file():  # a session saved before it kept that; no records
        return 0
    mods = [t.dispatched[0] for t in tasks]
    mine = {database.commit_workload(mod).as_json()[0] for mod in mods if database.has_workload(mod)}
    return sum(workload in mine for workload in _unsaved_workloads(directory, session))


def _known(database, task) -> tuple[int, float | None]:
    """(records, best seconds) the database already holds for a task's workload."""
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return 0, None
    workload = database.commit_workload(mod)
    top = database.get_top_k(workload, 1)
    best = min((float(s) for s in top[0].run_secs), default=None) if top and top[0].run_secs else None
    return len(database.get_top_k(workload, 1 << 30)), best


def _flop(task) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(task.dispatched[0]))
    except Exception:  # some tasks (reshapes, copies) have no countable arithmetic
        return 0.0


def _plan_session(path: Path, options: TuneOptions, extracted, known, directory: Path) -> dict:
    """A resumed tune continues the last session's task set and budget; a new one tunes the tasks
    whose workloads have no records yet (all of them, to improve further, when every one is known)."""
    if options.resume and path.is_file():
        try:
            session = json.loads(path.read_text())
        except ValueError:
            raise HarnessError(f"the interrupted tune's progress file {path} is unreadable",
                               "tune without --resume (the records stay and seed it), or restore the file") from None
        session["resumed"] = session.get("resumed", 0) + 1
        session["trials"] = options.resume_trials or session["trials"]
        return session
    new = [t.task_name for t in extracted if known[t.task_name][0] == 0]
    session = {"trials": options.trials, "trials_done": 0, "records_bytes_at_save": _records_bytes(directory),
               "tasks": new or [t.task_name for t in extracted],
               "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_session(path, session)  # (its folder made as it is written)
    return session


def _write_session(path: Path, session: dict) -> None:
    """Whole or not at all: a Ctrl-C while it is written leaves the previous one for --resume."""
    with written_whole(path) as partial:
        partial.write_text(json.dumps(session, indent=2) + "\n")


def _result(model, target, directory, records_hash, states, trials_run, state, skipped, session, notes) -> TuneResult:
    return TuneResult(model.name, target.name, directory, records_hash, states, trials_run, state.elapsed_s,
                      skipped, state.stopped, session, notes, target.emulated)


def _run_meta_schedule(database, tasks, directory: Path, target: Target, options: TuneOptions, state: TuneState,
                       progress: TuneProgress, trials: int, threads: int) -> Path:
    """Run the search; returns the file TVM's native (C++) warnings went to."""
    from tvm.s_tir import meta_schedule as ms

    _forget_old_runs(directory / "runs")
    log_dir = directory / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")  # MetaSchedule logs in log_dir/logs
    per_iter = max(4, min(32, trials // max(1, len(tasks))))
    contexts, weights = tune_contexts(tasks, target, options, log_dir, threads)
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20, enable_cpu_cache_flush=False)
    native_log = log_dir / NATIVE_LOG
    with (_noting_interrupts() as interrupted, _follow_scheduler_log(log_dir / "logs", len(tasks), progress, interrupted),
          native_stderr_to(native_log),
          process_temp_folder("tvmharness-candidates-") as candidates):  # (a kit's: kit_server's own, no harness code)
        if options.tracker:
            runner = kit_runner(options, evaluator, target)
        else:
            runner = ms.runner.LocalRunner(timeout_sec=options.runner_timeout_s, evaluator_config=evaluator)
        try:
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(log_dir), max_trials_global=trials,
                          num_trials_per_iter=per_iter, runner=_stopping_on(interrupted, runner, "run"),
                          builder=_stopping_on(interrupted, candidate_builder(target, options, threads, candidates), "build"),
                          database=database, task_scheduler=ms.task_scheduler.GradientBased(seed=0),
                          cost_model=_stopping_on(interrupted, ms.cost_model.XGBModel(num_warmup_samples=16,
                                                                                      num_tuning_cores=threads), "predict"),
                          measure_callbacks=[*(_measured_only(c, options) if isinstance(c, (
                                                   ms.measure_callback.AddToDatabase, ms.measure_callback.UpdateCostModel)) else c
                                               for c in ms.MeasureCallback.create("default")),
                                             _progress_callback(state, progress, options, interrupted)])
        except Exception as err:
            full = next((reason for reason in FOLDER_REASONS if reason in str(err)), None)
            if full is not None:  # MetaSchedule's own write (a record, a log line), said as a RuntimeError
                raise HarnessError(f"tuning stopped: a write failed ({full}); it writes its records and logs in {directory} "
                                   f"and its candidates in the temporary folder ({tempfile.gettempdir()})",
                                   f"free space there (or make it writable), or give another --output-dir or TMPDIR; "
                                   f"{TUNE_RECORDS_KEPT}", exit_code=FAILED) from err
            if not state.stopped and not interrupted():  # else: the loop was ended (_StopTuning), its records are kept
                raise
        finally:  # candidates a stopped tune had queued never run: they would load the CPU under what comes next
            runner.pool._threadpool.shutdown(wait=False, cancel_futures=True)
            runner.pool.shutdown(wait=False)  # and its worker processes end
        if interrupted():  # what it leaves: the first round of candidates takes a while before a record is written
            kept = (TUNE_RECORDS_KEPT if state.trials_done else "it stopped before its first trial was measured, so it "
                    "wrote no record (`tvmharness tune --resume` goes on from the records there are)")
            raise Interrupted(f"interrupted while tuning: {kept}; nothing was measured")
    return native_log


RUN_LOGS_KEPT = 30  # tunes' logs folders under a records folder's runs/ (one per model, variant and tune): the newest


def _forget_old_runs(runs: Path) -> None:
    """The logs of all but the newest tunes go (a nightly tune adds a folder each night; its records
    stay in the records file). Tunes of one folder take turns (its lock), so none is being written."""
    folders = sorted(p for p in runs.glob("*") if p.is_dir())
    for folder in folders[:max(0, len(folders) - (RUN_LOGS_KEPT - 1))]:
        shutil.rmtree(folder, ignore_errors=True)


# Past waiting for a kit and its session's own timeout: connecting to the tracker and the kit (seconds each).
KIT_MARGIN_S = 30.0


def kit_runner(options: TuneOptions, evaluator, target: Target):
    """MetaSchedule's RPC runner, one worker per kit, each candidate bounded in time. Its own pool waits
    for a worker for ever, and a kit that stops answering mid-measurement (a board that loses power or
    its network) never closes the connection: the candidate would block the tune in a receive. Here a
    worker still busy after the wait for a kit, the session's timeout and a margin is killed, and the
    candidate fails (a kit that merely overran ends its session itself before that). The hung kit is
    no longer free at the tracker, so the candidates after it find no kit and the tune stops as when
    the kits are gone."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.support.popen_pool import PopenPoolExecutor

    rpc_config = ms.runner.RPCConfig(tracker_host=options.tracker.host, tracker_port=options.tracker.port,
                                     tracker_key=options.key, session_timeout_sec=int(options.runner_timeout_s))
    runner = ms.runner.RPCRunner(rpc_config=rpc_config, evaluator_config=evaluator, max_workers=options.kits,
                                 f_create_session=functools.partial(_kit_session, wait_s=options.kit_wait_s,
                                                                    emulated=target.emulated),
                                 f_upload_module=_upload_noting_kit)
    runner.pool.shutdown()  # RPCRunner takes no timeout: its pool is replaced by one with a timeout
    runner.pool = PopenPoolExecutor(max_workers=options.kits,
                                    timeout=options.kit_wait_s + options.runner_timeout_s + KIT_MARGIN_S)
    return runner


KIT_ASKS = 3  # kits a candidate asks for before it gives up on a key whose kits are of the other kind
KIT_ASK_AGAIN_S = 10.0  # how long it waits for another kit once it has refused one


def _kit_session(rpc_config, wait_s: float, emulated: str):
    """The session a candidate is measured in: MetaSchedule's own asks the tracker for a kit and waits
    for ever; this one gives up after wait_s, or within seconds once the key has no kit left. A kit
    emulated where the tune's records are a board's (or the other way round: one key serving both) is
    refused, and the candidate counted as never measured: its timing would go into the wrong records."""
    key = rpc_config.tracker_key
    refused = []  # (session, kit, what it is): sessions held while asking again, so that the tracker hands out another kit
    for _ in range(KIT_ASKS):
        try:  # asked again: a while for another kit, not the whole wait
            session, kit = request_kit(Address(rpc_config.tracker_host, rpc_config.tracker_port), key,
                                       min(wait_s, KIT_ASK_AGAIN_S) if refused else wait_s, rpc_config.session_timeout_sec)
        except NoKitError:
            if not refused:
                raise
            break
        try:
            found = json.loads(session.get_function("tvmharness.kit_info")()).get("emulated") or ""
        except Exception:  # TVM's own server says nothing of itself: a board's
            found = ""
        if bool(found) == bool(emulated):
            session.kit = kit  # (_upload_noting_kit notes it)
            return session
        refused.append((session, kit, f"emulated by {found}" if found else "a board"))
    said = "; ".join(f"kit {kit} is {what}" for _, kit, what in refused)
    raise RuntimeError(f"{_no_kit_said_for(key)} fits this tune: {said}, and this tune's records are "
                       f"{'an emulated kit' if emulated else 'a board'}'s (serve emulated kits under a key of their own)")


# MetaSchedule's error for a candidate whose runner worker its pool killed: the kit it waited on hung
POOL_KILLED = "RPCRunner: Timeout, killed after"


def _kit_note(artifact_path: str) -> Path:
    """Where a candidate's runner notes the kit it runs on: beside the candidate's folder, which MetaSchedule
    removes before the measure callbacks read the results."""
    folder = Path(artifact_path).parent
    return folder.with_name(folder.name + ".kit")


def _upload_noting_kit(session, local_path: str, remote_path: str):
    """MetaSchedule's upload, after noting the candidate's kit: a kit killed mid-candidate (TVM's kShutdown)
    or hung (its worker killed by the pool, in another process) leaves an error that does not name it."""
    from tvm.s_tir.meta_schedule.runner.rpc_runner import default_upload_module

    _kit_note(local_path).write_text(session.kit)
    return default_upload_module(session, local_path, remote_path)


def lost_kit(artifact_path: str, error: str) -> str | None:
    """The kit a candidate was measured on where its error says the kit was lost on the way (killed or hung),
    as its session's runner noted it; None for any other error, or a candidate that reached no kit."""
    if POOL_KILLED not in error and not any(w in error for w in LOST_WORDS):
        return None
    with contextlib.suppress(OSError):
        return _kit_note(artifact_path).read_text()
    return None


class _StopTuning(Exception):
    """Ends MetaSchedule's loop from a measure callback. Terminating its tasks there instead fails
    when the loop terminates the task it is joining ("Check failed: !task->is_terminated")."""


@contextlib.contextmanager
def _noting_interrupts():
    """Yields whether Ctrl-C came. The handler only notes it: an exception raised wherever the signal
    lands can unwind through TVM's C++ frames into std::terminate (a segfault); the search ends at its
    next call into Python (_stopping_on, the measure callback), within seconds, or after the batch of
    candidates being built. A second Ctrl-C ends the process at once: records are appended a line at a
    time, by the main thread, which is between Python bytecodes when a handler runs."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield lambda: False
        return

    def handler(signum, frame):
        if seen:
            sys.stderr.write(f"\ninterrupted again: stopped at once; {TUNE_RECORDS_KEPT}\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        seen.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(seen)
    finally:
        signal.signal(signal.SIGINT, previous)


def _stopping_on(interrupted: Callable[[], bool], obj, *names: str):
    """obj, whose methods that MetaSchedule's loop calls (a builder's build, a runner's run, a cost
    model's predict) first end the loop if Ctrl-C came: raising there unwinds TVM's C++ cleanly."""
    inner = getattr(obj, "_inst", obj)  # a derived object's Python half, whose methods its C++ half calls
    for name in names:
        def checked(*args, _method=getattr(inner, name), **kwargs):
            if interrupted():
                raise _StopTuning("interrupted")
            return _method(*args, **kwargs)

        setattr(inner, name, checked)
    return obj


def tune_contexts(tasks, target: Target, options: TuneOptions, log_dir: Path, threads: int):
    """MetaSchedule's tune contexts (the search space and evolutionary search of each task) and the
    tasks' weights."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extracted_tasks_to_tune_contexts

    _reset_meta_schedule_logging()
    _load_tensor_intrinsics(gpu=target.on_gpu)
    return extracted_tasks_to_tune_contexts(
        tasks, work_dir=str(log_dir), num_threads=threads, seed=0,
        strategy=ms.search_strategy.EvolutionarySearch(population_size=options.population,
                                                       init_min_unmeasured=min(50, options.population // 2)))


def candidate_builder(target: Target, options: TuneOptions, threads: int, folder: str | None = None):
    """The builder of tuning candidates: shared libraries under `folder` (default: the temporary
    folder), cross-compiled for a kit's CPU."""
    from tvm.s_tir import meta_schedule as ms

    from . import _ms_build

    export = functools.partial(_ms_build.export_shared_library, folder=folder, compiler=target.preset.cross_compiler)
    return ms.builder.LocalBuilder(max_workers=threads, timeout_sec=options.builder_timeout_s,
                                   f_build=_ms_build.fast_build, f_export=export)


@contextlib.contextmanager
def _follow_scheduler_log(log_dir: Path, n_tasks: int, progress: TuneProgress, interrupted: Callable[[], bool]):
    """MetaSchedule reports measured batches (our callback) only when it joins them, after a whole
    first round over every task: minutes on a large model. Its scheduler log says what it does
    meanwhile; follow it so progress never stands still. A Ctrl-C is acknowledged here, not in the
    signal handler, which may run inside a progress update."""
    stop = threading.Event()
    picks = re.compile(r'picks Task #(\d+): "(.*)"')

    def follow():
        path, offset, told = log_dir / "tvm.s_tir.meta_schedule.logging.task_scheduler.log", 0, False
        while not stop.wait(0.5):
            if interrupted() and not told:
                told = True
                progress.step("interrupted (Ctrl-C, SIGTERM or SIGHUP): stopping once the candidates being built are done (a second one stops at once)")
            if not path.is_file():
                continue
            with open(path) as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
            for line in chunk.splitlines():
                match = picks.search(line)
                if match:
                    progress.step(f"searching and building candidates for task {int(match.group(1)) + 1}/{n_tasks}: "
                                  f"{match.group(2)}")

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


_GPU_INTRINSICS = ("tvm.s_tir.tensor_intrin.cuda", "tvm.s_tir.tensor_intrin.rocm")


def _load_tensor_intrinsics(gpu: bool) -> None:
    """Every MetaSchedule TuneContext imports tvm.s_tir.tensor_intrin, which registers every backend's
    tensor intrinsics: 45 s here, 34 s of it the CUDA ones a CPU target never uses. For CPU targets
    those modules are left out (placeholders in their place); a GPU target later in the same process
    gets the real ones."""
    import importlib
    import types

    if gpu:
        for name in _GPU_INTRINSICS:
            if getattr(sys.modules.get(name), "__placeholder__", False):
                del sys.modules[name]
                importlib.import_module(name)
        return
    if "tvm.s_tir.tensor_intrin" not in sys.modules:
        for name in _GPU_INTRINSICS:
            placeholder = types.ModuleType(name)
            placeholder.__placeholder__ = True
            sys.modules[name] = placeholder


def _reset_meta_schedule_logging() -> None:
    """MetaSchedule configures its loggers on every tune and fails on the second one in a process
    when its logger holds handlers without names; start clean. Its console handler writes to stdout,
    so keep it to errors (stdout may carry --json); the full logs go to the files under logs/."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.ERROR)


def _no_kit_said_for(key: str) -> str:
    return f"no kit under '{key}'"


def _no_kit_said(options: TuneOptions) -> tuple[str, ...]:
    """What a runner result's error says when its candidate found no kit (or none that fits), or no tracker to ask."""
    return _no_kit_said_for(options.key), TRACKER_GONE


def _never_measured(builder_results, runner_results, options: TuneOptions) -> list[int]:
    """The candidates that were built and found no kit: never run."""
    return [i for i, (built, ran) in enumerate(zip(builder_results, runner_results))
            if not built.error_msg and any(w in (ran.error_msg or "") for w in _no_kit_said(options))]


def _measured_only(callback, options: TuneOptions):
    """MetaSchedule's callback (adding records to the database, updating the cost model) given only
    the candidates that were measured: one that never reached a kit is no failed schedule, and its
    record would stand in the database for good as one that failed."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class MeasuredOnly(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            never = set(_never_measured(builder_results, runner_results, options))
            kept = [i for i in range(len(measure_candidates)) if i not in never]
            callback.apply(task_scheduler, task_id, *([values[i] for i in kept] for values in
                                                      (measure_candidates, builder_results, runner_results)))

    return MeasuredOnly()


def _progress_callback(state: TuneState, progress: TuneProgress, options: TuneOptions,
                       interrupted: Callable[[], bool] = lambda: False):
    """A MetaSchedule measure callback: counts trials and errors, tracks the best time per task,
    and ends the tune on Ctrl-C, on the time budget or when the model estimate stops improving."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    by_name = {t.name: t for t in state.tasks}
    best_estimate = {"ms": math.inf, "at_trial": 0}

    @derived_object
    class Callback(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            task = by_name[task_scheduler.tasks_[task_id].ctx.task_name]
            # Candidates that found no kit (or no tracker to ask for one) were never measured: they spend
            # no budget (--resume gets it back).
            no_kit = _never_measured(builder_results, runner_results, options)
            measured, unbuilt, unreachable = 0, 0, []
            for i, (built, ran) in enumerate(zip(builder_results, runner_results)):
                if i in no_kit:
                    continue
                task.trials += 1
                state.trials_done += 1
                error = built.error_msg or ran.error_msg
                if error or not ran.run_secs:
                    task.errors += 1
                    task.first_error = task.first_error or one_line(error or "no timing returned")
                    unbuilt += bool(built.error_msg)
                    # named by the error (KitUnreachable's), or the kit the candidate was on when it was killed or hung
                    kit = None if built.error_msg else (named_kit(ran.error_msg or "", options.key)
                                                        or lost_kit(built.artifact_path, ran.error_msg or ""))
                    unreachable += [kit] if kit else []
                    continue
                measured += 1
                secs = sum(float(s) for s in ran.run_secs) / len(ran.run_secs)
                task.best_s = secs if task.best_s is None else min(task.best_s, secs)
            if measured:  # (which kit measured it is unknown: the kits named before may be back)
                state.unreachable_kits.clear()
            state.unreachable_kits += [k for k in dict.fromkeys(unreachable) if k not in state.unreachable_kits]
            if state.on_batch is not None:
                state.on_batch()
            estimate = state.model_estimate_ms
            if estimate is not None and estimate < 0.99 * best_estimate["ms"]:
                best_estimate.update(ms=estimate, at_trial=state.trials_done)
            stop = ""
            # Candidates that waited for a kit in vain, and none measured (those that reached a kit found it
            # hung or leaving; a kit that hangs says nothing more than "An exception occurred"): so would the
            # next batch. A candidate that did not build says nothing of the kits.
            if interrupted():
                stop = "interrupted"
            elif no_kit and not measured and not unbuilt:
                state.kits_lost = True
                error = runner_results[no_kit[0]].error_msg
                stop = error[max(error.rfind(w) for w in _no_kit_said(options)):].splitlines()[0]  # past the traceback
            elif options.time_budget_s is not None and state.elapsed_s >= options.time_budget_s:
                stop = f"time budget of {options.time_budget_s:.0f} s reached"
            elif (options.patience and estimate is not None
                  and state.trials_done - best_estimate["at_trial"] >= options.patience):
                stop = f"no 1% improvement in the last {options.patience} trials"
            progress.update(state, task)
            if stop and not state.stopped:
                state.stopped = stop
                raise _StopTuning(stop)

    return Callback()

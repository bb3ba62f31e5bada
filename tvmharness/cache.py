"""Content hashes and the on-disk cache every stage keys its outputs by."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HarnessError, path_error

OUTPUT_DIR = Path("results")  # a recipe's [output] dir, and so the cache's, tuning records' and store's, unless told otherwise
CACHE_DIR = OUTPUT_DIR / "cache"


def content_hash(*parts: Any) -> str:
    """A stable sha256 over bytes, strings and JSON-able values, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, (bytes, bytearray, memoryview)):
            data = bytes(part)
        elif isinstance(part, str):
            data = part.encode()
        else:
            data = json.dumps(part, sort_keys=True, default=str).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def writable_folder(path: Path) -> None:
    """A folder a command or run writes into, made and written to before any work: a file in its place,
    or a folder this user may not write, is refused first, by its name and with the fix."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:  # named by the folder, not by the temporary file's random name
        raise path_error(OSError(e.errno, e.strerror, str(path))) from None


def folder_can_be_made(path: Path) -> None:
    """A folder a command makes only once its work succeeds (a failed one leaves none behind), checked
    before that work: a folder is made and removed where the nearest existing one is, else refused as
    writable_folder refuses it."""
    there = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    try:
        if there.is_file():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        os.rmdir(tempfile.mkdtemp(prefix=".tvmharness-probe-", dir=there))
    except OSError as e:  # named by the folder asked for, not by the probe's random name
        raise path_error(OSError(e.errno, e.strerror, str(path))) from None


def process_temp_folder(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder named by this process. One killed outright (-9, the kernel's out-of-memory
    killer) cannot remove its own: those of `prefix` whose process is gone are removed first."""
    import psutil

    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = folder.name[len(prefix):].split("-")[0]
        if pid.isdigit() and (int(pid) == os.getpid() or not psutil.pid_exists(int(pid))):  # (a killed one's, pid reused)
            shutil.rmtree(folder, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-", ignore_cleanup_errors=True)


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def written_whole(path: Path, checked: bool = False):
    """A path beside `path` to write to, which becomes `path` only when the block ends without an
    error: a stopped run never leaves half a file that a later one would take as done. Each writer has
    its own partial file (two processes building one model at once), and the last to finish replaces
    the other's whole file with its own. `checked`: its hash kept beside it, for `intact`."""
    # the suffix kept: writers go by it (.so, .onnx); a long name's stem hashed, so that the partial's fits NAME_MAX
    stem = path.stem if len(path.name) <= 200 else content_hash(path.stem)[:16]
    partial = path.with_name(f"{stem}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{stem}.partial*{path.suffix}"):  # a killed writer's: its process is gone
        if not writer_alive(stale.name):
            stale.unlink(missing_ok=True)
    try:
        yield partial
        with open(partial, "rb") as written:  # on disk before its name: after a power loss, no empty file under it
            os.fsync(written.fileno())
        if checked:  # (first, and whole: a stop between the two leaves a hash the file does not match: made again)
            kept = _hash_file(path).with_name(f"{_hash_file(path).name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            kept.write_text(file_hash(partial))
            os.replace(kept, _hash_file(path))
        os.replace(partial, path)  # atomic: a reader sees the old file or the new one
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _hash_file(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def intact(path: Path) -> bool:
    """Whether a cached file written `checked` is there and whole: one its hash no longer matches (a disk
    that failed, an edit by hand) is removed, so that it is made again rather than fail every run.
    A file of an older release has no hash beside it: taken as it is."""
    if not path.is_file():
        return False
    kept = _hash_file(path)
    try:
        whole = not kept.is_file() or file_hash(path) == kept.read_text().strip()
    except OSError:  # unreadable: not to be trusted either
        whole = False
    if not whole:
        for gone in (path, kept):
            with contextlib.suppress(OSError):  # (a read-only cache: making it again says why it cannot be kept)
                gone.unlink()
    return whole


def torch_write_failed(err: BaseException) -> bool:
    """Whether torch.save (or torch.export.save) failed to write rather than to pickle: its zip writer
    says a full disk as a RuntimeError ("[enforce fail at inline_container.cc] unexpected pos")."""
    return isinstance(err, OSError) or isinstance(err, RuntimeError) and (
        "inline_container" in str(err) or "file write failed" in str(err))


def write_whole(path: Path, text: str) -> None:
    """A report's file (a page, junit.xml) written whole or not at all: a disk that fills leaves the
    file that was there, not half a page a CI job would publish, and the message names the file. A
    link is written through to its file (a "latest.json" stays a link); a device or a pipe
    (/dev/stdout, /dev/null, a shell's >(...)) is written to as it is, never replaced by a file."""
    path = Path(path)
    try:
        # /dev/stdout, /proc/self/fd/1: a link to whatever the shell opened (a file it redirected to too), written in place
        if str(path).startswith(("/dev/", "/proc/")) or path.exists() and not path.is_file():
            with open(path, "w", encoding="utf-8") as out:
                out.write(text)
            return
        with written_whole(path.resolve() if path.is_symlink() else path) as partial:
            partial.write_text(text, encoding="utf-8")
    except OSError as err:
        raise HarnessError(f"cannot write {path}: {err.strerror or err}",
                           "free space there (or make it writable), or give another path") from None


def writer_alive(name: str) -> bool:
    """Whether the process a partial file names (NAME.partial-PID-RANDOM.EXT; an older one's names none) runs here."""
    match = re.search(r"\.partial-(\d+)-", name)
    if match is None:
        return False
    try:
        os.kill(int(match[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        pass
    return True


def short_name(name: str, limit: int = 200) -> str:
    """A file or folder name made of user-given parts (a model's name), within `limit` characters (a
    file system's NAME_MAX is 255): a longer one keeps its start and ends in a hash of the whole."""
    return name if len(name) <= limit else f"{name[:limit - 17]}-{content_hash(name)[:16]}"


def stage_dir(cache_root: Path, stage: str, key: str) -> Path:
    """Where one stage keeps the output for one key: <root>/<stage>/<key[:16]>. A lookup marks the
    entry used (its folder's time), which `prune_cache` goes by."""
    path = Path(cache_root) / stage / key[:16]
    with contextlib.suppress(OSError):  # (none yet: made when written)
        os.utime(path)
    ignored_by_git(Path(cache_root), ["*"], "everything here is made again when needed")  # (gigabytes of builds)
    return path


def ignored_by_git(folder: Path, patterns: list[str], why: str) -> None:
    """A folder of ours in a project's own repository tells git which of its files are no change to
    commit, as pytest's cache does: a .gitignore, written once (one the user edited stays as it is)."""
    ignore = folder / ".gitignore"
    if not ignore.exists():
        with contextlib.suppress(OSError):  # a read-only folder: its owner's business
            folder.mkdir(parents=True, exist_ok=True)
            ignore.write_text(f"# made by tvmharness: {why}\n" + "".join(f"{p}\n" for p in patterns))


@dataclass
class CacheEntry:
    stage: str  # tvm (builds), onnx and pt2 (exports), int8 (quantized models), models (trained weights)
    path: Path
    bytes: int
    last_used: float  # seconds since the epoch


def cache_entries(cache_root: Path) -> list[CacheEntry]:
    """Every entry of the cache, oldest use first (a file a writer renames meanwhile is passed over)."""
    entries = []
    for stage in sorted(p for p in Path(cache_root).glob("*") if p.is_dir()):
        for entry in (p for p in stage.iterdir() if p.is_dir()):
            with contextlib.suppress(OSError):
                entries.append(CacheEntry(stage.name, entry, sum(_size(f) for f in entry.rglob("*")), entry.stat().st_mtime))
    return sorted(entries, key=lambda e: e.last_used)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0


def prune_cache(cache_root: Path, unused_for_s: float) -> tuple[list[CacheEntry], list[str]]:
    """Removes the entries no lookup has used for `unused_for_s` seconds (a later run that needs one
    makes it again); returns them, and why each entry that could not be removed was not (a read-only
    cache). An entry looked up since the listing, or being built (its entry lock held), stays. Meant
    for an output folder no run is using at the time (a run's reads take no lock)."""
    cutoff = time.time() - unused_for_s
    removed, refused = [], []
    for entry in cache_entries(cache_root):
        if entry.last_used >= cutoff:
            break
        try:
            if entry.path.stat().st_mtime >= cutoff:  # used since it was listed
                continue
            with file_lock(entry.path / ".lock", wait=False) as free:
                if free:
                    shutil.rmtree(entry.path)
                    removed.append(entry)
        except FileNotFoundError:  # gone meanwhile (another prune)
            continue
        except OSError as err:
            refused.append(f"{entry.path}: {err.strerror or err}")
    return removed, refused


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True):
    """An exclusive lock on a lock file (flock: it goes with the process, however it ends); yields
    whether it is held, False without `wait` where another process holds it."""
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


@contextlib.contextmanager
def entry_lock(directory: Path):
    """One writer of a cache entry at a time: a second process building the same thing waits for the
    first, and then finds its output there."""
    directory.mkdir(parents=True, exist_ok=True)
    with file_lock(directory / ".lock"):
        yield

"""TVM's native (C++) output: it writes to file descriptor 2, under the progress. A tune, a build and
target checks send it to a log file (or nowhere) and read the warnings back from there."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

NATIVE_LOG = "tvm-native.log"  # the log's name, in a tune's run folder and a build's cache folder


@contextlib.contextmanager
def native_stderr_to(path: Path):
    """TVM's C++ code logs to file descriptor 2: an int8 tune prints hundreds of warnings there (each
    tensorize attempt that does not fit, with its IR), and a build with an embedding one per lookup,
    burying the progress. They go to `path`, and Python's own stderr (the progress, errors) keeps
    the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    terminal = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    python_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1, encoding=getattr(python_stderr, "encoding", None))
    try:
        yield
    finally:
        redirected, sys.stderr = sys.stderr, python_stderr  # swapped back before closing: a progress thread may write
        redirected.close()
        os.dup2(terminal, 2)
        os.close(terminal)


_WARNING = re.compile(rb"Warning: (.+)")
RELOWERED = b"--- tvmharness: the model is lowered again from here ---\n"  # a build's second pass over the model


def native_warnings(path: Path) -> list[dict]:
    """The distinct warnings in a native log, in first-seen order, with how often each came (where
    the log holds passes over the model again, RELOWERED, as often as the pass that warned most)."""
    counts: dict[str, int] = {}
    for part in (path.read_bytes() if path.is_file() else b"").split(RELOWERED):
        here: dict[str, int] = {}
        for line in part.splitlines():
            found = _WARNING.search(line)
            if found:
                message = found.group(1).decode(errors="replace").strip()
                here[message] = here.get(message, 0) + 1
        for message, count in here.items():
            counts[message] = max(counts.get(message, 0), count)
    return [{"message": message, "count": count} for message, count in counts.items()]


def native_log_note(path: Path) -> str:
    """Where TVM's own output during a search went, and its most frequent warning, as logged."""
    lines = len(path.read_bytes().splitlines())
    top = max(native_warnings(path), key=lambda w: w["count"], default=None)  # the first seen, of equal counts
    quoted = f"; most often ({top['count']}x): {top['message']}" if top else ""
    return f"TVM's own output during the search ({lines} lines{quoted}) is in {path}"

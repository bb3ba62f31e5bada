"""Content hashes and the on-disk cache every stage keys its outputs by."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any


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


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def written_whole(path: Path):
    """A path beside `path` to write to, which becomes `path` only when the block ends without an
    error: a stopped run never leaves half a file that a later one would take as done."""
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")  # the suffix kept: writers go by it (.so, .onnx)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)


def stage_dir(cache_root: Path, stage: str, key: str) -> Path:
    """Where one stage keeps the output for one key: <root>/<stage>/<key[:16]>."""
    return Path(cache_root) / stage / key[:16]

"""A rack on this machine's loopback: a tracker and kits started through the command line, as a
user would start them, and stopped together. For tests, benchmarks and trying the remote path."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import EMULATED_KEY
from .tracker import parse_address, summary

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackRack:
    """`with LoopbackRack() as rack: rack.serve("x86", 2)`: everything started is killed on exit."""

    def __init__(self):
        port = free_port()
        self.tracker = f"127.0.0.1:{port}"
        self.processes: list[subprocess.Popen] = []
        self.start("tracker", "start", "--port", str(port))
        self.wait_for(self._answers, 30, "the tracker")

    def __enter__(self) -> "LoopbackRack":
        return self

    def __exit__(self, *_exc) -> None:
        for process in self.processes:
            stop(process, gently=True)

    def start(self, *args: str) -> subprocess.Popen:
        # Each in a session of its own, so that stopping a kit stops everything it started.
        process = subprocess.Popen([sys.executable, "-m", "tvmharness", *args], cwd=ROOT, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def serve(self, key: str, count: int = 1, threads: int = 1, timeout: float = 60) -> list[subprocess.Popen]:
        """Start `count` kits on this host's Python under `key`; returns once all have registered."""
        before = len(self.kits(key))
        started = [self.start("devkit", "serve", "--tracker", self.tracker, "--key", key, "--port", str(free_port()),
                              "--threads", str(threads)) for _ in range(count)]
        self.wait_for(lambda: len(self.kits(key)) >= before + count, timeout, f"{count} kit(s) under '{key}'")
        return started

    def emulate(self, key: str = EMULATED_KEY, threads: int = 2, timeout: float = 600) -> subprocess.Popen:
        """The emulated aarch64 kit (set up on first use: about a minute)."""
        started = self.start("devkit", "emulate", "aarch64", "--tracker", self.tracker, "--key", key,
                             "--port", str(free_port()), "--threads", str(threads))
        self.wait_for(lambda: self.kits(key), timeout, "the emulated aarch64 kit")
        return started

    def serve_stock(self, key: str, *args: str, timeout: float = 60) -> tuple[subprocess.Popen, int]:
        """TVM's own RPC server under `key` (`args`: more of its flags), a kit that says nothing of itself
        as a phone app's does; returns it and its port once it has registered."""
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", self.tracker, "--key", key,
                                    "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1), *args],
                                   start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(process)
        self.wait_for(lambda: self.kits(key), timeout, "TVM's own server")
        return process, port

    def kits(self, key: str) -> list[str]:
        try:
            keys = summary(parse_address(self.tracker))
        except Exception:
            return []
        return keys[key].kits if key in keys else []

    def _answers(self) -> bool:
        try:
            summary(parse_address(self.tracker))
            return True
        except Exception:
            return False

    def wait_for(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if any(p.poll() not in (None, 0) for p in self.processes[:1]):
                raise RuntimeError("the loopback tracker exited")
            time.sleep(0.5)
        raise TimeoutError(f"timed out waiting for {what}")


def stop(process: subprocess.Popen, gently: bool = False) -> None:
    """Killed, as a kit that dies; or, gently, stopped as a service manager stops it (a kit then
    removes its folder) and killed if it lingers."""
    if process.poll() is not None:  # reaped already: its group id may be another's now
        return
    for signum in [signal.SIGTERM, signal.SIGKILL] if gently else [signal.SIGKILL]:
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass
        try:
            process.wait(10)
            break
        except subprocess.TimeoutExpired:
            continue

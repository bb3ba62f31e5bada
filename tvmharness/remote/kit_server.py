"""A dev kit: TVM's RPC server registered with a tracker.

This file runs on the kit's own Python (a board's, or the emulated aarch64 one), so it imports only
the standard library and tvm. Beyond TVM's server it adds three things the harness relies on:
- `tvmharness.kit_info`: what the kit is (architecture, its Python's pointer width, emulated or not,
  threads), so that a job sent to a kit of the wrong architecture fails with a clear message before
  anything is uploaded;
- `tvmharness.memory_mark` and `tvmharness.memory_since`: the peak resident memory of the session's
  process from a mark on (Linux's high-water mark), what a model takes of the board's RAM to load and
  run (each session is a process of its own, forked from the server's);
- a restart in place: when a session's worker dies (its client was killed mid-job), TVM's server
  loop raises and leaves the tracker for good; here it registers again and takes new sessions.
"""

import argparse
import ctypes
import gc
import json
import logging
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

MEMORY_CALLS = 3  # a runtime allocates on its first calls and keeps it (TVM's VM plans storage once, ORT grows an arena)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracker", required=True, help="HOST:PORT of the RPC tracker")
    parser.add_argument("--key", required=True, help="the key jobs ask the tracker for")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9090, help="first port to try")
    parser.add_argument("--port-end", type=int, default=0, help="last port to try (default: port + 99)")
    parser.add_argument("--threads", type=int, default=0, help="TVM threads on the kit (0: TVM's default)")
    parser.add_argument("--emulated", default="", help="set when the kit is emulated: says by what")
    args = parser.parse_args(argv)

    if args.threads:
        os.environ["TVM_NUM_THREADS"] = str(args.threads)
    if args.threads and args.threads < (os.cpu_count() or 1):
        # TVM pins its workers to the first cores: kits sharing a machine would all run on core 0.
        os.environ.setdefault("TVM_BIND_THREADS", "0")
    # Each session works in a folder of its own under this one; what a killed session leaves is
    # removed when the server registers again, and the whole folder when the server stops.
    _remove_orphaned_folders()
    workdir = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
    tempfile.tempdir = workdir
    server = os.getpid()
    try:
        _serve(args, workdir)
    finally:
        if os.getpid() == server:  # (not a session's forked process on its way out)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a later stop must not cut the removal short
                signal.signal(signum, signal.SIG_IGN)
            shutil.rmtree(workdir, ignore_errors=True)


FOLDER_PREFIX = "tvmharness-kit-"


def _remove_orphaned_folders():
    """What kits killed outright (-9) left: each folder is named by its server's process."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*-*"):
        pid = folder.name[len(FOLDER_PREFIX):].split("-")[0]
        try:
            if int(pid) != os.getpid():  # (this pid's own folder is not made yet: it was a killed one's)
                os.kill(int(pid), 0)
                continue
        except (ValueError, PermissionError):  # not one of these; another user's live kit
            continue
        except ProcessLookupError:
            pass
        shutil.rmtree(folder, ignore_errors=True)


def _stop(signum, _frame):
    # One stop is enough: a second (a group's signal reaches `devkit serve` too, which passes it on)
    # would interrupt the unwinding that removes the folder.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for session in multiprocessing.active_children():  # else the exit waits for it (a non-daemon process)
        session.terminate()
    raise SystemExit(128 + signum)


def _serve(args, workdir):
    # A stop (SIGTERM from `devkit serve` or a service manager, SIGHUP from a closed terminal) unwinds,
    # so that the folder goes too.
    # A session's process (forked) keeps the default: it is stopped while blocked in TVM's C++.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)  # a closed terminal hangs up the whole group
    os.register_at_fork(after_in_child=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGTERM, signal.SIGHUP)])

    import tvm
    import tvm_ffi
    from tvm.rpc import base
    from tvm.rpc import server as rpc_server

    rpc_server.logger.setLevel(logging.WARNING)
    # What the kit is, known without TVM's runtime: the server's process must not start TVM's thread
    # pool (or CUDA) before it forks a session's.
    described = {
        "machine": platform.machine(),  # the kernel's: a 32-bit userland on a 64-bit kernel says aarch64 too
        "bits": 8 * struct.calcsize("P"),  # the kit's Python's pointers: what a library it loads is built for
        "emulated": args.emulated,
    }
    _register_with(base, {**described, "threads": args.threads or None})

    def explain_probe(record):  # the host checks it can reach a kit before each job with a key no session has
        if record.getMessage().startswith("mismatch key"):
            record.msg, record.args = record.getMessage() + " (a host checking that it can reach this kit: expected)", ()
        return True

    rpc_server.logger.addFilter(explain_probe)
    global _serve_session
    _serve_session, rpc_server._serve_loop = rpc_server._serve_loop, _session
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def cuda():
        try:  # a Jetson's GPU; None where TVM's CUDA runtime is absent or sees no device
            dev = tvm.cuda(0)
            return f"{dev.device_name} (sm_{dev.compute_version.replace('.', '')})" if dev.exist else None
        except Exception:
            return None

    @tvm_ffi.register_global_func("tvmharness.kit_info")
    def kit_info():
        return json.dumps({
            **described,
            "cuda": cuda(),
            "hostname": socket.gethostname(),
            "python": platform.python_version(),
            "tvm": tvm.__version__,
            "threads": tvm.runtime.num_threads(),
        })

    @tvm_ffi.register_global_func("tvmharness.memory_mark")
    def _memory_mark():
        return mark_memory()

    @tvm_ffi.register_global_func("tvmharness.memory_since")
    def _memory_since(base_kb):
        return json.dumps(memory_since(base_kb))

    tracker_host, _, tracker_port = args.tracker.rpartition(":")
    sock, port = _bind(args.host, args.port, args.port_end or args.port + 99)
    if port != args.port:  # said, or a kit left running on it (another kit?) goes unnoticed
        log.warning("port %d on %s is taken; this kit listens on %d", args.port, args.host, port)
    log.info("kit %s (%s%s) on %s:%d, registered with the tracker at %s", args.key, platform.machine(),
             f", emulated by {args.emulated}" if args.emulated else "", args.host, port, args.tracker)
    sys.stdout.flush()
    home = os.getcwd()
    while True:
        try:
            # TVM's own loop: registers with the tracker, serves one session at a time.
            rpc_server._listen_loop(sock, port, args.key, (tracker_host, int(tracker_port)), None, None)
        except RuntimeError as err:
            log.warning("a session ended abnormally (%s); registering again", err)
            os.chdir(home)
            for name in os.listdir(workdir):
                shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
            time.sleep(0.5)


def _register_with(base, info):
    """TVM's server registers with the tracker as {"key", "addr"} (UPDATE_INFO); its tracker keeps any
    other field of that dict and lists it in its summary. So the kit adds what it is under "kit_info"
    (tvmharness.remote.tracker.KIT_INFO), and `tvmharness devices` shows it with no session on the kit."""
    sendjson = base.sendjson

    def registering(sock, data):
        if isinstance(data, list) and len(data) == 2 and data[0] == base.TrackerCode.UPDATE_INFO:
            data = [data[0], {**data[1], "kit_info": info}]
        return sendjson(sock, data)

    base.sendjson = registering  # (the server's process talks to no tracker but its own)


log = logging.getLogger("tvmharness.kit")
_serve_session = None  # TVM's session loop, which _session runs


def _session(*args):
    """A session's process: one that fails (its client went away mid-job: killed, a Ctrl-C) says why in
    a line, not in a traceback on the kit's terminal; the server then registers again (and says so)."""
    try:
        _serve_session(*args)
    except Exception as err:
        said = next((line.strip() for line in reversed(str(err).splitlines()) if line.strip()), type(err).__name__)
        log.warning("a session ended: %s", said)
        sys.exit(1)


def status_kb(field):
    """A figure of this process's /proc/self/status, in kB (VmRSS: resident now; VmHWM: its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}: memory is measured on Linux only")


def mark_memory():
    """Resident kB now, with freed heap handed back first and the high-water mark reset to it: the
    mark a peak is measured from."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the system: the mark starts from live memory
    except (OSError, AttributeError):  # not glibc: the mark includes freed heap, the peak reads a little low
        pass
    base = status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark to the current resident size
    return base


def memory_since(base_kb):
    """{"peak_mb", "resident_mb"}: the high-water mark and resident memory now, above the mark."""
    return {"peak_mb": round((status_kb("VmHWM") - base_kb) / 1024, 2),
            "resident_mb": round((status_kb("VmRSS") - base_kb) / 1024, 2)}


def _bind(host, port, port_end):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in range(port, port_end + 1):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError:
            sock.close()
            continue
        sock.listen(1)
        return sock, candidate
    sys.exit(f"no free port in {port}-{port_end} on {host}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass

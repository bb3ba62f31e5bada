"""Dev kits this machine can start: TVM's RPC server on this host's Python, or an emulated aarch64
kit: an aarch64 Python with the TVM runtime, run under qemu-user.

The emulated kit is set up once and cached (about 450 MB, under ~/.cache/tvmharness): Debian's arm64
packages for Python and the C/C++ runtimes, unpacked into a root folder without installing them,
and PyPI's aarch64 wheels of the same TVM. Its timings prove the path, not ARM speed: every row
measured on it says "emulated"."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import FAILED, HarnessError
from ..provenance import installed_version
from . import die_with_parent
from .tracker import Address, is_loopback, probe, warn_if_wide

KIT_SERVER = Path(__file__).with_name("kit_server.py")
QEMU = "qemu-aarch64-static"
SETUP_FORMAT = 1
# Debian packages the kit's Python needs (dependencies are resolved by apt); wheels from PyPI.
DEBIAN_PACKAGES = ["python3.11", "libgomp1", "libstdc++6"]
WHEELS = ["apache-tvm", "apache-tvm-ffi", "numpy", "psutil", "cloudpickle", "tornado", "ml-dtypes"]


@dataclass
class KitPython:
    """How to start a kit's Python: the command and its environment."""

    command: list[str]
    env: dict[str, str]
    emulated: str = ""  # what emulates it, if anything
    root: Path | None = None


def host_python() -> KitPython:
    return KitPython(command=[sys.executable], env=dict(os.environ))


class _Stopped(Exception):
    """SIGTERM or SIGHUP reached `devkit serve`."""


def serve(tracker: Address, key: str, kit: KitPython, host: str = "127.0.0.1", port: int = 9090,
          threads: int = 0, on_warning: Callable[[str], None] = print) -> int:
    """Run a kit in the foreground until interrupted (Ctrl-C, SIGTERM, SIGHUP), which returns 0; a
    server that stops of itself (killed: the out-of-memory killer) is an error, said with how it stopped."""
    if is_loopback(host) and is_loopback(tracker.host) is False:  # (a name that does not resolve: probe says so)
        # The tracker hands out the address it sees the kit at; a kit on loopback is not there.
        raise HarnessError(f"the tracker at {tracker} is reached over the network, and this kit would listen on {host}, "
                           "where the host the tracker sends jobs from cannot reach it",
                           "pass --host 0.0.0.0 (or this board's address) to serve the network; keep the rack on a "
                           "trusted network, since TVM RPC has no authentication")
    probe(tracker)
    warning = warn_if_wide(host)
    if warning:
        on_warning(warning)
    command = [*kit.command, str(KIT_SERVER), "--tracker", str(tracker), "--key", key, "--host", host,
               "--port", str(port), "--threads", str(threads), "--emulated", kit.emulated]

    stopping = []

    def stop(signum, _frame):
        if not stopping:  # a second SIGTERM (`timeout` sends one to the group too) waits for the first's stop
            stopping.append(signum)
            raise _Stopped(signum)

    # A service manager stops the kit with SIGTERM and a closed terminal hangs it up: either stops the
    # kit's server too, as Ctrl-C does, rather than leaving it registered with the tracker.
    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    process = None
    try:
        parent = os.getpid()  # the kit's server goes with this command, even one killed with -9
        process = subprocess.Popen(command, env=kit.env, preexec_fn=lambda: die_with_parent(signal.SIGTERM, parent))
        code = process.wait()
        raise HarnessError(f"the kit's server (process {process.pid}) {_how_it_ended(code)}, and kit {key} is off the "
                           "tracker", "see its messages above, then start the kit again (a kill by SIGKILL is often "
                           "the out-of-memory killer's: `dmesg` says)", FAILED)
    except (KeyboardInterrupt, _Stopped):
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        return 0
    finally:  # once stopping, a late second signal is that stop still: ignored until the command has exited
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if stopping else handler)


def _how_it_ended(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


# ---------------------------------------------------------------------------------------------
# The emulated aarch64 kit

def cache_root() -> Path:
    base = os.environ.get("TVMHARNESS_KIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tvmharness", "devkits")
    return Path(base)


def _pins() -> dict[str, str]:
    """The same versions as this host's, so the kit runs what the host compiled for."""
    return {name: version for name in WHEELS if (version := installed_version(name)) is not None}


def emulated_aarch64(progress: Callable[[str], None] = lambda _t: None) -> KitPython:
    """The emulated kit's Python, set up on first use and reused afterwards."""
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise HarnessError(f"{QEMU} is not installed, so no aarch64 kit can be emulated here",
                           "install it: apt-get install qemu-user-static")
    pins = _pins()
    tag = f"aarch64-py311-tvm{pins.get('apache-tvm', 'unknown')}"
    root = cache_root() / tag
    kit = _kit_python(root, qemu)
    ready = root / "ready.json"
    if ready.is_file() and json.loads(ready.read_text()).get("format") == SETUP_FORMAT:
        return kit
    if platform.machine() == "aarch64":
        raise HarnessError("this host is aarch64 already", "start a plain kit: `tvmharness devkit serve`")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix="setup-") as scratch:
        progress("downloading Debian's arm64 Python and runtime libraries")
        _unpack_debian(Path(scratch), root / "rootfs")
        progress("downloading the aarch64 TVM wheels from PyPI")
        _install_wheels(root / "site", pins)
    progress("checking the kit's Python (import tvm under qemu takes a few seconds)")
    check = subprocess.run([*kit.command, "-c", "import platform, tvm; print(platform.machine(), tvm.__version__)"],
                           env=kit.env, capture_output=True, text=True, timeout=300)
    if check.returncode != 0 or not check.stdout.startswith("aarch64"):
        raise HarnessError(f"the emulated kit in {root} does not start: {(check.stderr or check.stdout).strip()[-300:]}",
                           f"remove {root} and run the command again")
    ready.write_text(json.dumps({"format": SETUP_FORMAT, "pins": pins, "python": check.stdout.split()}) + "\n")
    return kit


def _kit_python(root: Path, qemu: str) -> KitPython:
    rootfs = root / "rootfs"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONPATH": str(root / "site"), "PYTHONNOUSERSITE": "1"}
    return KitPython(command=[qemu, "-L", str(rootfs), str(rootfs / "usr/bin/python3.11")], env=env,
                     emulated=f"qemu-user ({Path(qemu).name}) on {platform.machine()}", root=root)


def _debian_sources() -> list[str]:
    """The host's Debian archive lines (deb822 or one-line), marked for arm64."""
    lines = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    k, _, v = line.partition(":")
                    fields[k.strip()] = v.strip()
            if fields.get("Types") == "deb" and "debian" in fields.get("URIs", ""):
                for uri in fields["URIs"].split():
                    for suite in fields.get("Suites", "").split():
                        lines.append(f"deb [arch=arm64] {uri} {suite} {fields.get('Components', 'main')}")
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        for line in path.read_text().splitlines() if path.is_file() else []:
            parts = line.split()
            if parts[:1] == ["deb"] and "debian" in line:
                rest = [p for p in parts[1:] if not p.startswith("[")]
                lines.append("deb [arch=arm64] " + " ".join(rest))
    return lines


def _unpack_debian(scratch: Path, rootfs: Path) -> None:
    """apt with a private configuration (its own lists, cache and an empty status file) downloads
    the arm64 packages; dpkg -x unpacks them. Nothing is installed on the host."""
    sources = _debian_sources()
    if not sources or shutil.which("apt-get") is None:
        raise HarnessError("the emulated kit needs Debian's arm64 packages, and this host has no Debian apt sources",
                           "run this on a Debian or Ubuntu host")
    apt = scratch / "apt"
    for d in ("lists/partial", "cache/archives/partial", "parts"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    (apt / "sources.list").write_text("\n".join(sources) + "\n")
    (apt / "apt.conf").write_text("\n".join([
        'APT::Architecture "arm64";', 'APT::Architectures { "arm64"; };',
        f'Dir::State "{apt}";', f'Dir::State::Lists "{apt}/lists";', f'Dir::State::status "{apt}/status";',
        f'Dir::Cache "{apt}/cache";', f'Dir::Etc::SourceList "{apt}/sources.list";',
        f'Dir::Etc::SourceParts "{apt}/parts";', f'Dir::Etc::PreferencesParts "{apt}/parts";',
        'Debug::NoLocking "true";', 'APT::Install-Recommends "false";', ""]))
    env = dict(os.environ, APT_CONFIG=str(apt / "apt.conf"), DEBIAN_FRONTEND="noninteractive")
    for step in (["apt-get", "-q", "update"], ["apt-get", "-q", "-y", "install", "--download-only", *DEBIAN_PACKAGES]):
        done = subprocess.run(step, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise HarnessError(f"`{' '.join(step)}` (arm64, private apt state) failed: {done.stderr.strip()[-300:]}",
                               "check that the host reaches its Debian mirror")
    rootfs.mkdir(parents=True, exist_ok=True)
    for deb in sorted((apt / "cache/archives").glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(rootfs)], check=True)


def _install_wheels(site: Path, pins: dict[str, str]) -> None:
    if site.exists():
        shutil.rmtree(site)
    wanted = [f"{name}=={version}" for name, version in pins.items()]
    platforms = [arg for p in ("manylinux_2_28_aarch64", "manylinux2014_aarch64", "manylinux_2_17_aarch64")
                 for arg in ("--platform", p)]
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target",
                           str(site), *platforms, "--only-binary=:all:", "--python-version", "3.11",
                           "--implementation", "cp", *wanted], capture_output=True, text=True)
    if done.returncode != 0:
        raise HarnessError(f"pip could not get the aarch64 wheels ({', '.join(wanted)}): {done.stderr.strip()[-300:]}",
                           "check that PyPI is reachable")

"""TVM's RPC tracker: started here, asked what kits it has, and checked for reachability first
(TVM's own client retries a refused connection for 60 s before it says anything)."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import RETRY, HarnessError, one_line

DEFAULT_PORT = 9190
PROBE_TIMEOUT_S = 3.0
# A kit whose session died leaves the tracker and registers again within a second: only a key
# empty for longer than this has lost its kits.
GONE_AFTER_S = 5.0
KITS_GONE = "is registered any more: the last one died or left"  # ends a NoKitError that waiting cannot fix
TRACKER_GONE = "no RPC tracker answers at"  # starts one: no kit can be had until the tracker is back


def kits_gone(key: str, address) -> str:
    """What a job or a tune says when no kit is left under the key (tune.py knows it by KITS_GONE)."""
    return f"no kit under '{key}' at {address} {KITS_GONE}"


def start_tracker_again(address) -> str:
    """The fix for TRACKER_GONE, said alike by a kit row, a run's check of a kit and a tune."""
    return (f"start the tracker again (`tvmharness tracker start --port {address.port}`; kits served by "
            "`tvmharness devkit serve` register with it again)")


_empty_since: dict[tuple[str, str], float] = {}  # (tracker, key) -> when this process first saw no kit there
# A tracker restarted (a deploy) answers again within seconds, and its kits register again: requests wait
# this long for both before failing (remembered across requests, as _empty_since is).
TRACKER_GRACE_S = 20.0
_tracker_down_since: dict[str, float] = {}


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"  # an IPv6 address bracketed


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """HOST:PORT, [IPV6]:PORT, or HOST alone -> Address, with a clear error for anything else."""
    text = text.strip()
    if bracketed := re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", text):
        host, port = bracketed.group(1), bracketed.group(2) or str(default_port)
    elif _ipv6(text):  # an IPv6 address alone
        host, port = text, str(default_port)
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise HarnessError(f"'{text}' is not a tracker address", "write it as HOST:PORT, e.g. 127.0.0.1:9190 ([::1]:9190 for IPv6)")
    return Address(host, int(port))


def _ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def is_loopback(host: str) -> bool | None:
    """Whether every address a host name has here is a loopback one (IPv4 or IPv6); None: it has none here."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
        return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)
    except (OSError, ValueError):
        return None


def warn_if_wide(host: str) -> str | None:
    """TVM RPC has no authentication: anyone who reaches the port can run code on the machine."""
    if is_loopback(host):
        return None
    return (f"listening on {host}: TVM RPC has no authentication, so anyone who can reach this port can run "
            "code here. Bind 127.0.0.1 and tunnel (ssh -L) unless this network is trusted.")


@contextlib.contextmanager
def connect(address: Address, timeout: float = PROBE_TIMEOUT_S):
    """A socket to the tracker, past TVM's handshake. Raises OSError when nothing answers within the
    timeout, or what answers is not a tracker."""
    from tvm.rpc import base

    with socket.create_connection((address.host, address.port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        if struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
            raise ConnectionError("something else listens there")
        yield sock


def _unreachable(address: Address, err: OSError) -> HarnessError:
    why = err.strerror or str(err) or type(err).__name__
    if isinstance(err, socket.gaierror):  # a name that does not resolve: the address to fix, not a tracker to wait for
        return HarnessError(f"{TRACKER_GONE} {address}: {address.host} is no host name this machine knows ({why})",
                            "check --tracker (HOST:PORT of the machine the tracker runs on)")
    return HarnessError(f"{TRACKER_GONE} {address} ({why})",
                        f"start one with `tvmharness tracker start --port {address.port}`, or check --tracker", RETRY)


def probe(address: Address, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail within seconds when nothing listens at the address, or something that is not a tracker does."""
    try:
        with connect(address, timeout):
            pass
    except OSError as err:
        raise _unreachable(address, err) from None


# The field of a kit's registration with the tracker that says what the kit is: TVM's tracker keeps
# whatever a server's UPDATE_INFO dict holds beyond {"key", "addr"} and hands it back in its summary,
# so a kit served by kit_server.py says it without a session on it (a busy one included).
KIT_INFO = "kit_info"


@dataclass(frozen=True)
class KitInfo:
    """A registered kit, and what it said of itself when it registered; None where it said nothing
    (TVM's own server, a phone app)."""

    address: str  # HOST:PORT
    machine: str | None = None  # the kit's architecture, as its kernel says it (x86_64, aarch64)
    bits: int | None = None  # its Python's pointer width
    emulated: str | None = None  # what emulates it ("qemu-user ..."); "": a real machine
    threads: int | None = None  # TVM threads it runs with, when it was told


@dataclass
class KeyStatus:
    key: str
    kits: list[str] = field(default_factory=list)  # HOST:PORT of each registered kit
    free: int = 0
    pending: int = 0  # requests waiting for a kit
    kit_info: list[KitInfo] = field(default_factory=list)  # each of the kits, in the same order

    @property
    def busy(self) -> int:
        return max(len(self.kits) - self.free, 0)


def summary(address: Address) -> dict[str, KeyStatus]:
    """The tracker's keys: kits registered under each, how many are free, how many requests wait."""
    from tvm.rpc import base

    try:
        with connect(address) as sock:
            base.sendjson(sock, [base.TrackerCode.SUMMARY])
            code, data = base.recvjson(sock)
    except OSError as err:
        raise _unreachable(address, err) from None
    except (ValueError, TypeError):  # not JSON, or not [code, summary]
        code, data = None, None
    if (code != base.TrackerCode.SUCCESS or not isinstance(data, dict) or not isinstance(data.get("server_info"), list)
            or not isinstance(data.get("queue_info"), dict)):
        raise HarnessError(f"the tracker at {address} did not answer a summary request", "check that it is a TVM RPC tracker")
    keys: dict[str, KeyStatus] = {}
    # Each entry is what one of the tracker's clients said of itself: one that cannot be read is left out
    for server in data["server_info"]:
        kit = _kit(server)
        if kit:
            status = keys.setdefault(kit[0], KeyStatus(kit[0]))
            status.kits.append(kit[1].address)
            status.kit_info.append(kit[1])
    for key, queue in data["queue_info"].items():
        if isinstance(queue, dict) and all(type(queue.get(n)) is int for n in ("free", "pending")):
            status = keys.setdefault(key, KeyStatus(key))
            status.free, status.pending = queue["free"], queue["pending"]
    return {k: v for k, v in sorted(keys.items()) if v.kits or v.pending}


def _kit(server) -> tuple[str, KitInfo] | None:
    """A kit's key and what it is from its entry in a tracker's summary ({"key": "server:KEY", "addr":
    [HOST, PORT], and KIT_INFO where kit_server.py registered it}); None for an entry of any other shape.
    A field of the wrong type is unknown, not an error: any client of the tracker may have written it."""
    if not isinstance(server, dict) or not isinstance(server.get("key"), str) or ":" not in server["key"]:
        return None
    addr = server.get("addr")
    if not (isinstance(addr, list) and len(addr) == 2 and isinstance(addr[0], str) and type(addr[1]) is int):
        return None
    said = server.get(KIT_INFO) if isinstance(server.get(KIT_INFO), dict) else {}

    def field_of(name: str, kind: type):
        return said[name] if type(said.get(name)) is kind else None  # (type, not isinstance: True is no thread count)

    return server["key"].split(":", 1)[1], KitInfo(f"{addr[0]}:{addr[1]}", field_of("machine", str), field_of("bits", int),
                                                   field_of("emulated", str), field_of("threads", int))


class NoKitError(Exception):
    """No kit under the key was free within the wait, none is registered under it any more, or the
    tracker stopped answering."""


def kit_under(kit: str, key: str) -> str:
    """How an error about one kit names it: `named_kit` reads it back (a tune's runner passes its errors on as text)."""
    return f"kit {kit} under '{key}'"


# What TVM's client says of a kit gone in the middle of a session: killed (kShutdown; "code=1" from a call made
# after that, as MetaSchedule's runner cleans up), its connection dropped
LOST_WORDS = ("kShutdown", "RPCCode::kReturn) is false: code=1", "connection", "Connection", "Broken pipe", "socket")


def named_kit(text: str, key: str) -> str | None:
    """The HOST:PORT of the kit under the key that an error's text names (kit_under), if any."""
    found = re.search(r"\bkit (\S+) under " + re.escape(f"'{key}'"), text)
    return found.group(1) if found else None


class KitUnreachable(Exception):
    """The tracker handed out a kit this host cannot open a session on: another kit may do."""

    def __init__(self, message: str, kit: str = ""):  # (message first: a tune's worker rebuilds it from its text)
        super().__init__(message)
        self.kit = kit


def _reach(host: str, port: int) -> None:
    """Fail within seconds when the kit's address does not answer from here (a firewall drops it, or
    the kit registered an address this host has no route to): TVM's own connect waits out the
    system's TCP timeout, two minutes. The probe opens TVM's RPC handshake with a key no session
    has, which every TVM RPC server (Python's, the C++ one, the phone apps) answers "mismatch" to
    before waiting on for the session the tracker matched it with (it logs a "mismatch key" warning)."""
    from tvm.rpc import base

    probe = b"probe:tvmharness"
    with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as sock:
        sock.sendall(struct.pack("<ii", base.RPC_MAGIC, len(probe)) + probe)
        if len(sock.recv(4)) != 4:  # closed without an answer: not a TVM RPC server that is up
            raise ConnectionError("the kit's server closed the connection without answering")


def request_kit(address: Address, key: str, wait_s: float, session_timeout_s: float):
    """A session on the next free kit under the key, and that kit's HOST:PORT. TVM's own request
    waits for ever; this one gives up after wait_s, or within seconds once no kit is registered
    under the key (the last one died or left) or the tracker stops answering, and says which."""
    from tvm import rpc
    from tvm.rpc import base

    deadline, seen = time.monotonic() + wait_s, (str(address), key)
    while True:
        try:
            code, url, kit_port, matchkey = _matched(address, key, wait_s, deadline, seen)
        except _TrackerDown as down:  # restarted (a deploy) or gone: waited for a while, remembered across requests
            now = time.monotonic()
            if now - _tracker_down_since.setdefault(str(address), now) >= TRACKER_GRACE_S or now >= deadline:
                raise NoKitError(down.cause) from None
            _empty_since[seen] = now + TRACKER_GRACE_S - GONE_AFTER_S  # once it is back, its kits take seconds to register
            time.sleep(1.0)
            continue
        except NoKitError:  # the tracker answered: a later outage gets its grace again
            _tracker_down_since.pop(str(address), None)
            raise
        _tracker_down_since.pop(str(address), None)
        break
    if code != base.TrackerCode.SUCCESS:
        raise RuntimeError(f"the tracker refused the request ({code})")
    kit = f"{url}:{kit_port}"
    try:
        _reach(url, kit_port)
    except OSError as err:
        why = err.strerror or str(err) or type(err).__name__
        raise KitUnreachable(f"{kit_under(kit, key)} cannot be reached from this host ({why})", kit) from None
    try:
        return rpc.connect(url, kit_port, matchkey, session_timeout=session_timeout_s), kit
    except Exception as err:
        raise KitUnreachable(f"{kit_under(kit, key)} did not open a session: {one_line(err)}", kit) from None


class _TrackerDown(Exception):
    def __init__(self, cause: str):
        super().__init__(cause)
        self.cause = cause


def _matched(address: Address, key: str, wait_s: float, deadline: float, seen: tuple[str, str]):
    """The tracker's answer to a request for a kit under the key: (code, kit host, kit port, match key)."""
    from tvm.rpc import base

    try:
        with connect(address, timeout=10) as sock:
            base.sendjson(sock, [base.TrackerCode.REQUEST, key, "", 1])
            while True:
                # Remembered across requests: once a key has been empty that long, the jobs and tuning
                # candidates queued behind this one fail at once instead of each waiting the same seconds.
                now = time.monotonic()
                status = summary(address).get(key)
                if status and status.kits:
                    _empty_since.pop(seen, None)
                elif now - _empty_since.setdefault(seen, now) >= GONE_AFTER_S:
                    raise NoKitError(kits_gone(key, address))
                if now >= deadline:
                    raise NoKitError(f"no kit under '{key}' at {address} was free within {wait_s:.0f} s")
                if select.select([sock], [], [], 1.0)[0]:
                    break
            _empty_since.pop(seen, None)
            code, (url, kit_port, matchkey) = base.recvjson(sock)
            return code, url, kit_port, matchkey
    except OSError as err:  # the tracker went away: no kit can be had until it is back
        raise _TrackerDown(_unreachable(address, err).cause) from None
    except HarnessError as err:  # (summary's: the tracker went away meanwhile)
        raise _TrackerDown(err.cause) from None


def run_tracker(host: str, port: int, listening: Callable[[], None] = lambda: None) -> None:
    """Run TVM's tracker in this process until interrupted (the tracker does all the scheduling);
    `listening` is called once it listens. The port is bound exactly: a tracker that moved to the next
    free port would lose its kits."""
    from tvm.rpc import base, tracker

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise HarnessError(f"cannot listen on {host}:{port}: {err.strerror}",
                           "pick another --port, or stop what uses it (`tvmharness devices` tells whether it is a tracker)") from None
    sock.listen(64)
    listening()
    tracker.logger.setLevel("WARNING")
    tracker._tracker_server(sock, base.random_key("tracker"))  # TVM's own tracker loop, in this thread

"""Remote dev kits: TVM's RPC tracker, kits registered with it (real boards, or an emulated aarch64
kit on this machine), and the rack that spreads measurement jobs over the free kits."""

import ctypes
import os
import signal

EMULATED_KEY = "emulated-aarch64"  # the emulated kit's usual key: here, where the CLI reads it without devkit's imports
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(signum: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Have the kernel send this process `signum` when its parent dies (Linux; elsewhere nothing): a
    kit's server whose `devkit` command was killed with -9 would otherwise go on serving, registered.
    The signal comes when the parent's thread that started it ends: start it from the main thread.
    `parent`: the pid it was started by, to catch a parent that died before this ran."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signum)

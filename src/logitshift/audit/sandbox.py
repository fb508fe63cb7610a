"""Run a command on an untrusted file in a child process with resource limits.

Defence in depth behind :mod:`logitshift.audit.safeload`: whatever a file we did not
foresee makes torch do, it happens in a child ``python -m logitshift …`` whose
address space (``RLIMIT_AS``), CPU time (``RLIMIT_CPU``) and file sizes
(``RLIMIT_FSIZE``) are bounded, and with no core dumps (``RLIMIT_CORE`` 0),
all set by the child itself before it opens the file (:func:`enter`). The
parent copies the child's output as it comes (progress bars included) and
returns its exit status; a child ended by a signal (the CPU limit sends
``SIGXCPU``) becomes a one-line :class:`LogitShiftError`, so the command exits
2, never 1.

The memory limit is a budget on top of what the child's interpreter holds
once torch is imported (torch maps several GB of address space for its
libraries before any work starts): the child sets ``RLIMIT_AS`` to its own
``VmSize`` plus the budget.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from ..core.errors import LogitShiftError

#: set in the child's environment: ``"<memory budget in bytes>:<CPU seconds>"``
ENV = "LOGITSHIFT_SANDBOX_MEMORY"
FILE_SIZE_LIMIT = 1 << 30  # no output of ours comes near 1 GiB


def inside() -> bool:
    """Whether this process is the limited child."""
    return ENV in os.environ


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def enter() -> int:
    """In the child, before the file is opened: cap the address space at its current size plus the budget, the
    CPU time, file sizes (``FILE_SIZE_LIMIT``) and core dumps (none). Returns the address-space cap (0: none).

    The limits are set here rather than between fork and exec (``preexec_fn``
    is unsafe in a parent that runs threads, as torch's does).
    """
    import resource

    memory, _, cpu = os.environ.get(ENV, "").partition(":")
    limits = [("RLIMIT_FSIZE", FILE_SIZE_LIMIT), ("RLIMIT_CORE", 0)] if cpu else []
    if cpu.strip().isdigit() and int(cpu) > 0:
        limits.append(("RLIMIT_CPU", int(cpu)))
    cap = 0
    if memory.strip().isdigit() and int(memory) > 0:
        cap = _vm_size() + int(memory)
        limits.append(("RLIMIT_AS", cap))
    for name, value in limits:
        limit = getattr(resource, name, None)
        if limit is None:
            continue
        _soft, hard = resource.getrlimit(limit)
        resource.setrlimit(limit, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))
    return cap


def _pump(src, dst, broken: list[bool]) -> None:
    """Copy a pipe to a text stream chunk by chunk (progress bars redraw with '\\r', not lines). When the reader of
    ``dst`` goes away (``| head``), keep draining ``src`` so the child never blocks on a full pipe, and say so."""
    while True:
        chunk = os.read(src.fileno(), 65536)
        if not chunk:
            break
        if broken:
            continue
        try:
            dst.write(chunk.decode("utf-8", "replace"))
            dst.flush()
        except BrokenPipeError:
            broken.append(True)


def run(argv: Sequence[str], what: str, memory_bytes: int, cpu_seconds: int) -> int:
    """``python -m logitshift *argv`` in a limited child; its exit status (0, 1 or 2), or a one-line error."""
    env = {**os.environ, ENV: f"{int(memory_bytes)}:{int(cpu_seconds)}"}
    child = subprocess.Popen(
        [sys.executable, "-m", "logitshift", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        close_fds=True,
    )
    broken: list[bool] = []
    pumps = [
        threading.Thread(target=_pump, args=(child.stdout, sys.stdout, broken), daemon=True),
        threading.Thread(target=_pump, args=(child.stderr, sys.stderr, broken), daemon=True),
    ]
    for t in pumps:
        t.start()
    try:
        code = child.wait()
    except KeyboardInterrupt:
        child.kill()
        child.wait()
        raise
    finally:
        for t in pumps:
            t.join(timeout=5)
    if broken:
        raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")  # the command ends quietly (cli.main)
    if code in (0, 1, 2):
        return code
    if code == 130:
        raise KeyboardInterrupt
    if code < 0:
        sig = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        reason = {"SIGXCPU": f"its CPU-time limit of {cpu_seconds} s (--cpu-limit)", "SIGKILL": "SIGKILL (out of memory?)"}.get(sig, sig)
        raise LogitShiftError(f"{what}: the audit was stopped by {reason}; nothing was concluded")
    raise LogitShiftError(f"{what}: the audit process ended with status {code}; nothing was concluded")


__all__ = ["ENV", "enter", "inside", "run"]

"""Run a command on an untrusted file in a child process with resource limits.

Defence in depth behind :mod:`logitshift.audit.safeload`: whatever a file we did not
foresee makes torch do, it happens in a child ``python -P -c <start logitshift> …``
whose address space (``RLIMIT_AS``), CPU time (``RLIMIT_CPU``) and file sizes
(``RLIMIT_FSIZE``) are bounded, and with no core dumps (``RLIMIT_CORE`` 0),
all set by the child itself before it opens the file (:func:`enter`), hard
limits equal to soft ones (the child cannot raise them again; the CPU's hard
limit :data:`CPU_GRACE` seconds above, so that its ``SIGXCPU`` comes first). The parent also
kills the child after a wall-clock limit (a child that sleeps uses no CPU time).

Nothing beside the file runs: the child is started with ``-P`` (no current
folder on ``sys.path``) from a fresh empty working folder, with a minimal
environment (:func:`child_env`: no ``PYTHONPATH``, ``HOME`` that empty folder),
so a ``.py`` shipped next to the model and named like a module torch imports
is never imported; the child returns to the caller's folder (paths on the
command line are the caller's) only once its limits are set. The parent
copies the child's output as it comes (progress bars included) and returns its
exit status; a child ended by a signal (the CPU limit sends ``SIGXCPU``) or by
the wall-clock limit becomes a one-line :class:`LogitShiftError`, so the
command exits 2, never 1.

It is not a container: the child runs as the user, can read and write what
the user can (within ``RLIMIT_FSIZE``), open network connections and start
processes. A container (a user and mount namespace with a read-only view of
the file system, no network: ``bwrap``, ``nsjail``, ``docker run --network
none --read-only``) or a seccomp filter would make it one.

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
#: set in the child's environment: the caller's working folder, entered once the limits are set
CWD_ENV = "LOGITSHIFT_SANDBOX_CWD"
#: the variables passed on to the child as they are (locale, which GPUs, thread counts, library paths)
KEEP_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TORCH_HOME",
    "MPLCONFIGDIR",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_HOME",
    "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "COLUMNS",
    "NO_COLOR",
)
#: the child's start: the folders of the running logitshift package and of the user's site-packages (``HOME``
#: moves) are searched after the installed ones
BOOT = "import sys; sys.path += sys.argv.pop(1).split(__import__('os').pathsep); from logitshift.cli import main; sys.exit(main())"
FILE_SIZE_LIMIT = 1 << 30  # no output of ours comes near 1 GiB
CPU_GRACE = 10  # seconds of CPU time between the soft limit (SIGXCPU, ends the child) and the hard one (SIGKILL)


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
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        # hard = soft: the child cannot lift them again (CPU: CPU_GRACE more, so that SIGXCPU comes first)
        resource.setrlimit(limit, (value, value + CPU_GRACE if name == "RLIMIT_CPU" else value))
    back = os.environ.get(CWD_ENV)
    if back:
        os.chdir(back)
    return cap


def child_env(home: str, limits: str) -> dict[str, str]:
    """The child's environment: :data:`KEEP_ENV` as they are, ``HOME`` the child's empty folder, the limits; no
    ``PYTHONPATH`` or anything else that changes what Python imports. ``TORCH_HOME`` and ``MPLCONFIGDIR`` point
    where the caller's would (cached weights and fonts), since ``HOME`` moves."""
    env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
    real_home = os.path.expanduser("~")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(real_home, ".cache")
    env.setdefault("TORCH_HOME", os.path.join(cache, "torch"))
    if os.path.isdir(os.path.join(cache, "matplotlib")):
        env.setdefault("MPLCONFIGDIR", os.path.join(cache, "matplotlib"))
    env.update({"HOME": home, ENV: limits, CWD_ENV: os.getcwd()})
    return env


def command(argv: Sequence[str]) -> list[str]:
    """The child's command line: ``python -P`` (no current folder on ``sys.path``), ``-E`` (no ``PYTHON*``
    variables), UTF-8 output; :data:`BOOT` appends the folder of this logitshift and the user's site-packages."""
    import site
    from pathlib import Path

    extra = [str(Path(__file__).resolve().parents[2])]  # the folder holding the logitshift package
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user_site and user_site in sys.path:
        extra.append(user_site)
    return [sys.executable, "-P", "-E", "-X", "utf8", "-c", BOOT, os.pathsep.join(extra), *argv]


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


def wall_limit(cpu_seconds: int) -> float:
    """The child's wall-clock limit: twice its CPU time plus a minute (a child that waits uses no CPU time)."""
    return 2.0 * cpu_seconds + 60.0


def run(argv: Sequence[str], what: str, memory_bytes: int, cpu_seconds: int, wall_seconds: float | None = None) -> int:
    """``logitshift *argv`` in a limited child (:func:`command`, :func:`child_env`, started in a fresh empty folder);
    its exit status (0, 1 or 2), or a one-line error. ``wall_seconds`` defaults to :func:`wall_limit`."""
    import tempfile

    wall = wall_limit(cpu_seconds) if wall_seconds is None else wall_seconds
    with tempfile.TemporaryDirectory(prefix="logitshift-child.") as home:
        return _run_in(home, argv, what, memory_bytes, cpu_seconds, wall)


def _run_in(home: str, argv: Sequence[str], what: str, memory_bytes: int, cpu_seconds: int, wall: float) -> int:
    child = subprocess.Popen(
        command(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(home, f"{int(memory_bytes)}:{int(cpu_seconds)}"),
        cwd=home,
        close_fds=True,
    )
    broken: list[bool] = []
    pumps = [
        threading.Thread(target=_pump, args=(child.stdout, sys.stdout, broken), daemon=True),
        threading.Thread(target=_pump, args=(child.stderr, sys.stderr, broken), daemon=True),
    ]
    for t in pumps:
        t.start()
    timed_out = False
    try:
        try:
            code = child.wait(timeout=wall)
        except subprocess.TimeoutExpired:
            timed_out = True
            child.kill()
            code = child.wait()
    except KeyboardInterrupt:
        child.kill()
        child.wait()
        raise
    finally:
        for t in pumps:
            t.join(timeout=5)
    if timed_out:
        raise LogitShiftError(f"{what}: the audit was stopped by its wall-clock limit of {wall:g} s; nothing was concluded")
    if broken:
        raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")  # the command ends quietly (cli.main)
    if code in (0, 1, 2):
        return code
    if code == 130:
        raise KeyboardInterrupt
    if code < 0:
        sig = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        reason = {
            "SIGXCPU": f"its CPU-time limit of {cpu_seconds} s (--cpu-limit)",
            "SIGKILL": "SIGKILL (out of memory, or its CPU-time limit ignored?)",
        }.get(sig, sig)
        raise LogitShiftError(f"{what}: the audit was stopped by {reason}; nothing was concluded")
    raise LogitShiftError(f"{what}: the audit process ended with status {code}; nothing was concluded")


__all__ = ["CWD_ENV", "ENV", "child_env", "command", "enter", "inside", "run", "wall_limit"]

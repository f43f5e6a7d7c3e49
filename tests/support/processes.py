"""Every process a test starts, in its own process group, killed as a group and waited for.

``spawn()`` is how a test (or a fixture) starts a command. What a test spawned is SIGKILLed as a
group and waited for when the test ends, passed or failed (``stop_test_processes()``, from the
suite's autouse fixture); what a session fixture spawned (``for_session=True``), when the session
ends. A command's own children (a ``bgjobs dev``'s redis-server and workers) share its group, so
they go with it even when the command itself died first.

The test process is also a child subreaper (Linux's PR_SET_CHILD_SUBREAPER): a process whose
parent died comes back to it instead of to init, so ``leftovers()`` sees everything the suite
started, however it was started, and the session check names what is still alive at the end.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_PR_SET_CHILD_SUBREAPER = 36

_for_test: list[subprocess.Popen[Any]] = []
_for_session: list[subprocess.Popen[Any]] = []


def become_subreaper() -> None:
    """Orphaned descendants of this process are reparented to it (Linux); elsewhere, a no-op."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def spawn(argv: Sequence[str], *, for_session: bool = False, **popen: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **popen)`` in a new session (its own process group), stopped with
    the test that called it, or with the session."""
    process = subprocess.Popen(list(argv), start_new_session=True, **popen)
    (_for_session if for_session else _for_test).append(process)
    return process


def kill_group(process: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    """Signal ``process``'s whole group (it and whatever it started), wait for it, close its pipes."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def stop_test_processes() -> None:
    """Kill every group the test now ending spawned, whatever state it left them in, and reap the
    orphans that came back to this process (a SIGKILLed worker's children) once they exited."""
    while _for_test:
        kill_group(_for_test.pop())
    leftovers()


def stop_session_processes() -> None:
    while _for_session:
        kill_group(_for_session.pop())


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def children(parent: int) -> set[int]:
    """The processes whose parent is ``parent`` (a worker command's worker processes)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None and stat[1] == parent:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running: not gone and not a zombie (a killed worker's children may wait unreaped)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160] or "?"


def leftovers() -> list[str]:
    """This process's live children (orphans included, as a subreaper), each as ``pid: command``;
    its zombies are reaped on the way."""
    me = os.getpid()
    tracked = {p.pid for p in (*_for_test, *_for_session)}  # their Popen waits for them itself
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat[1] != me:
            continue
        if stat[0] == "Z":
            if pid not in tracked:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            continue
        found.append(f"{pid}: {_command(pid)}")
    return found


def kill_leftovers() -> None:
    """SIGKILL and reap what :func:`leftovers` found (their groups too), so none outlives the run."""
    for line in leftovers():
        pid = int(line.split(":", 1)[0])
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

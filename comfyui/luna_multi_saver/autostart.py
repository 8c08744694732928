"""Starting luna-daemon from the node when none answers (the node's ``autostart_daemon`` input).

The daemon is started as the same user with its default paths (and whatever ``LUNA_DAEMON_*`` variables ComfyUI
runs with, ``LUNA_DAEMON_SOCKET`` included), detached: in its own session (POSIX) or process group without a
console (Windows), stdin from the null device and stdout/stderr appended to ``luna-daemon.log`` in the daemon's state
directory (else the temp directory). On Windows it gets no console window (``CREATE_NO_WINDOW | DETACHED_PROCESS |
CREATE_NEW_PROCESS_GROUP``, and out of ComfyUI's job object where allowed) and inherits no handle but the standard
ones. It therefore outlives ComfyUI and finishes its queue when ComfyUI exits; it
stops only when asked (``luna-daemon stop``, SIGTERM).

Which daemon: ``$LUNA_DAEMON_BIN``, else ``luna-daemon`` on PATH, else ``python -m luna_daemon.server`` when the
``luna-daemon`` wheel is installed in ComfyUI's Python. ``LUNA_DAEMON_AUTOSTART=0`` switches auto-start off for
every node, whatever the node input says.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from . import client as daemon

ENV_SWITCH = "LUNA_DAEMON_AUTOSTART"
ENV_DEADLINE = "LUNA_DAEMON_AUTOSTART_TIMEOUT"
# How long the node waits for a daemon it started to answer the handshake; it polls, so a daemon that is up after
# 20 ms costs 20 ms. Past this, the node saves locally (the daemon may still come up and serve the next run).
DEFAULT_DEADLINE_S = 10.0
# A daemon we started may exit because another one (say, a second ComfyUI's) won the race for the instance lock:
# keep polling the socket this much longer before giving up.
LOST_RACE_GRACE_S = 2.0
LOG_NAME = "luna-daemon.log"
_OFF = {"0", "false", "no", "off"}

_lock = threading.Lock()


@dataclass(frozen=True)
class Started:
    """A daemon the node started (or found answering by the time it looked again)."""

    command: list[str]
    pid: int | None
    log: str | None


class AutostartFailed(Exception):
    """No daemon could be started, or the one started did not answer in time. The message says why."""


def switched_off() -> bool:
    """``LUNA_DAEMON_AUTOSTART=0`` (or false/no/off)."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() in _OFF


def enabled(node_input: bool) -> bool:
    return bool(node_input) and not switched_off()


def daemon_command() -> list[str] | None:
    """The command that runs ``luna-daemon serve``, or None when no daemon is installed."""
    explicit = os.environ.get("LUNA_DAEMON_BIN")
    if explicit:
        return [explicit, "serve"]
    on_path = shutil.which("luna-daemon")
    if on_path:
        return [on_path, "serve"]
    try:
        found = importlib.util.find_spec("luna_daemon.server") is not None
    except (ImportError, ValueError):
        found = False
    if found:
        if sys.platform == "win32":
            # The wheel's luna-daemon.exe itself, not a Python process holding it as a child: one detached process.
            binary = _wheel_binary()
            if binary:
                return [binary, "serve"]
        return [sys.executable, "-m", "luna_daemon.server"]
    return None


def _wheel_binary() -> str | None:
    """The binary the luna-daemon wheel installed, as its launcher finds it (``luna_daemon.find_binary``)."""
    try:
        import luna_daemon

        return luna_daemon.find_binary()
    except (ImportError, RuntimeError, OSError):
        return None


def state_dir() -> str:
    """The daemon's default state directory, as ``src/paths.rs`` (``$LUNA_DAEMON_STATE_DIR`` first)."""
    explicit = os.environ.get("LUNA_DAEMON_STATE_DIR")
    if explicit:
        return explicit
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser(r"~\AppData\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Application Support")
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        base = xdg if xdg and os.path.isabs(xdg) else os.path.expanduser("~/.local/state")
    return os.path.join(base, "luna-daemon")


def _open_log() -> tuple[int, str] | tuple[None, None]:
    """An append-only log file of our own: in the state directory (created 0700, as the daemon would), else in the
    temp directory. Never follows a symlink, never uses a file of another user."""
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    candidates = [os.path.join(state_dir(), LOG_NAME)]
    tmp_name = f"luna-daemon-{uid}.log" if uid is not None else "luna-daemon.log"
    candidates.append(os.path.join(tempfile.gettempdir(), tmp_name))
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for path in candidates:
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, flags, 0o600)
        except OSError:
            continue
        if uid is not None and os.fstat(fd).st_uid != uid:
            os.close(fd)
            continue
        return fd, path
    return None, None


def _spawn(command: list[str], socket_path: str) -> tuple[subprocess.Popen, str | None]:
    log_fd, log_path = _open_log()
    if log_fd is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with contextlib.suppress(OSError):
            os.write(log_fd, f"--- {stamp} started by the Luna Multi Saver node: {' '.join(command)}\n".encode())
    stdout = log_fd if log_fd is not None else subprocess.DEVNULL
    env = dict(os.environ)
    # The daemon listens where this node looks (the same value the daemon would compute by default).
    env["LUNA_DAEMON_SOCKET"] = socket_path
    # Its log is a file, not a terminal: no colour escape codes in it.
    env.setdefault("NO_COLOR", "1")
    try:
        proc = _popen_detached(command, stdout, env)
    finally:
        if log_fd is not None:
            os.close(log_fd)
    return proc, log_path


# Windows process-creation flags (the values of winbase.h; named here so the Windows branch is testable on Linux,
# whose subprocess module lacks them).
CREATE_NEW_PROCESS_GROUP = 0x00000200  # Ctrl+C / Ctrl+Break in ComfyUI's console do not reach the daemon
DETACHED_PROCESS = 0x00000008  # no console at all: nothing flashes up on the desktop
CREATE_NO_WINDOW = 0x08000000  # and if a console were created anyway, no window for it
CREATE_BREAKAWAY_FROM_JOB = 0x01000000  # outlive a launcher's job object that kills its processes on exit
DETACHED_FLAGS = CREATE_NO_WINDOW | DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP


def detached_kwargs(breakaway: bool = True) -> dict:
    """``Popen`` arguments that detach the daemon from ComfyUI: its own session on POSIX; on Windows no console
    window, its own process group and, where the job allows it, out of ComfyUI's job. No handle but the standard
    ones is inherited (``close_fds``: on Windows a handle list of stdin/stdout/stderr only)."""
    if sys.platform == "win32":
        flags = DETACHED_FLAGS | (CREATE_BREAKAWAY_FROM_JOB if breakaway else 0)
        return {"creationflags": flags, "close_fds": True}
    return {"start_new_session": True, "close_fds": True}


def _popen_detached(command: list[str], stdout, env: dict) -> subprocess.Popen:
    def start(breakaway: bool) -> subprocess.Popen:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=env,
            **detached_kwargs(breakaway),
        )

    try:
        return start(breakaway=True)
    except PermissionError:
        if sys.platform != "win32":
            raise
        # The job ComfyUI runs in forbids breakaway (CreateProcess: access denied): start inside it.
        return start(breakaway=False)


def _answers(socket_path: str) -> bool:
    try:
        daemon.Client.connect(socket_path, "luna-autostart", timeout=5.0).close()
    except daemon.ClientError:
        return False
    return True


def _log_tail(path: str | None, lines: int = 5) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail)


def deadline_s() -> float:
    try:
        return max(0.1, float(os.environ.get(ENV_DEADLINE, DEFAULT_DEADLINE_S)))
    except ValueError:
        return DEFAULT_DEADLINE_S


def ensure_daemon(socket_path: str) -> Started:
    """Starts a daemon for ``socket_path`` unless one answers there, and waits (polling the handshake, up to
    :func:`deadline_s`) until it answers. Raises :class:`AutostartFailed` with the reason otherwise.

    One caller at a time per process; a daemon that answers by the time the lock is held is used, not doubled."""
    with _lock:
        if _answers(socket_path):
            return Started(command=[], pid=None, log=None)
        command = daemon_command()
        if command is None:
            raise AutostartFailed(
                "no luna-daemon to start (set LUNA_DAEMON_BIN, put luna-daemon on PATH, or `pip install` the "
                "luna-daemon wheel into ComfyUI's Python)"
            )
        try:
            proc, log_path = _spawn(command, socket_path)
        except OSError as e:
            raise AutostartFailed(f"could not start {' '.join(command)}: {e.strerror or e}") from e
        deadline = time.monotonic() + deadline_s()
        delay = 0.005
        while True:
            if _answers(socket_path):
                return Started(command=command, pid=proc.pid, log=log_path)
            now = time.monotonic()
            code = proc.poll()
            if code is not None:
                # Another process's daemon may have won the race for the instance lock; give it a moment.
                deadline = min(deadline, now + LOST_RACE_GRACE_S)
            if now > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        code = proc.poll()
        where = f" (log: {log_path})" if log_path else ""
        tail = _log_tail(log_path)
        if code is not None:
            raise AutostartFailed(f"the luna-daemon it started exited with status {code}{where}: {tail}")
        # Left running: it may still come up and serve the next execution.
        raise AutostartFailed(f"the luna-daemon it started (pid {proc.pid}) did not answer in time{where}")

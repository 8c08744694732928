"""The luna-daemon wheel's Python side: finds the ``luna-daemon`` binary the wheel installed and runs it.

There is no second implementation here: ``python -m luna_daemon.server [FLAGS]`` is ``luna-daemon serve [FLAGS]``
and ``python -m luna_daemon ARGS`` is ``luna-daemon ARGS``, run by replacing this process (``os.execv``) on Unix
and as a child whose exit code is passed through on Windows (with no console window of its own when the launcher
has no console: see ``_windows_creation_flags``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig

__all__ = ["BinaryNotFound", "find_binary", "run"]

BINARY = "luna-daemon"


class BinaryNotFound(RuntimeError):
    """Neither the wheel's scripts directory nor PATH has the binary."""


def _exe(name: str) -> str:
    return name + ".exe" if sys.platform == "win32" else name


def _script_dirs() -> list[str]:
    """Where pip put the wheel's binary: the scripts directory of this interpreter's install scheme, then that of
    the user scheme (``pip install --user``), then the interpreter's own directory (a venv's ``bin/``)."""
    dirs = [sysconfig.get_path("scripts")]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        dirs.append(sysconfig.get_path("scripts", scheme=user_scheme))
    dirs.append(os.path.dirname(os.path.abspath(sys.executable)))
    seen: list[str] = []
    for d in dirs:
        if d and d not in seen:
            seen.append(d)
    return seen


def find_binary() -> str:
    """The path of the bundled ``luna-daemon`` binary (falls back to the first one on PATH)."""
    name = _exe(BINARY)
    for directory in _script_dirs():
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(BINARY)
    if found:
        return found
    raise BinaryNotFound(
        f"cannot find the {BINARY} binary in {', '.join(_script_dirs())} or on PATH; "
        "reinstall the wheel (`pip install --force-reinstall luna-daemon`)"
    )


def run(args: list[str]) -> int:
    """Runs ``luna-daemon ARGS``. On Unix this process becomes the daemon (same pid, so signals such as SIGTERM
    from a service manager reach it directly) and the function does not return."""
    try:
        binary = find_binary()
    except BinaryNotFound as e:
        print(f"luna-daemon: error: {e}", file=sys.stderr)
        return 127
    argv = [binary, *args]
    if sys.platform != "win32":
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(binary, argv)
    try:
        return subprocess.call(argv, creationflags=_windows_creation_flags())
    except KeyboardInterrupt:
        return 130


# winbase.h: give a console program no console window.
CREATE_NO_WINDOW = 0x08000000


def _windows_creation_flags() -> int:
    """Run from a console (``python -m luna_daemon.server`` in PowerShell, ComfyUI portable's .bat), the daemon
    shares it; run without one (``pythonw``, or a process started detached, as the node's auto-start does), the
    daemon would get a new console window of its own: CREATE_NO_WINDOW keeps the desktop clear."""
    return 0 if _has_console() else CREATE_NO_WINDOW


def _has_console() -> bool:
    try:
        import ctypes

        return bool(ctypes.windll.kernel32.GetConsoleWindow())
    except (ImportError, AttributeError, OSError):
        return True

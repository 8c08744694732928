"""Whether a daemon is really this user's before the client sends it a single pixel (PROTOCOL §3.1, issue 11.7).

With ``XDG_RUNTIME_DIR`` unset the socket lives in ``<tmp>/luna-daemon-<uid>/``, a name anyone can create first.
A squatter there would answer ``accepted`` and receive the prompts and pixels, and the node would never fall back.
So, on POSIX, before trusting a daemon the client checks:

1. if the socket exists, its directory: a real directory (not a symlink), owned by our effective user id, with no
   group or other permission bits (the daemon creates it ``0700`` and tightens an existing one, so its own
   directory always passes);
2. the server's user id from the kernel (``SO_PEERCRED`` on Linux; Python exposes no ``getpeereid`` on macOS and
   the BSDs, where check 1 and 3 stand alone): it must be ours;
3. the ``spool_dir`` the welcome announces: absolute, and private by the same rule as 1, before a segment is
   created in it.

Each check returns None or the reason, naming the path or the user id; the client raises ``UntrustedDaemon``
with it and the node then saves locally. PROTOCOL.md §3.1
states the same three rules for every client. On Windows the pipe's security descriptor, set by the daemon, plays
this part (none of these checks applies there).
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys

# No bit for the group or others: the mode the daemon gives its directories (0700).
PRIVATE_MASK = 0o077


def applies() -> bool:
    """The checks exist on POSIX only (Windows: the pipe's security descriptor)."""
    return os.name == "posix" and sys.platform != "win32"


def my_uid() -> int:
    return os.geteuid()


def private_dir_problem(path: str, what: str) -> str | None:
    """Why ``path`` is not a directory (not a symlink) owned by us with no group or other permission bits, or None.
    A missing directory passes (there is nothing to trust yet: connecting then fails as "not running")."""
    if not applies():
        return None
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    me = my_uid()
    refuse = "refusing to trust the daemon there (another user may be posing as luna-daemon)"
    if stat.S_ISLNK(info.st_mode):
        return f"{what} {path} is a symbolic link; {refuse}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{what} {path} is not a directory; {refuse}"
    if info.st_uid != me:
        return f"{what} {path} belongs to user id {info.st_uid}, not to you ({me}); {refuse}"
    if info.st_mode & PRIVATE_MASK:
        mode = stat.S_IMODE(info.st_mode)
        return f"{what} {path} has mode {mode:04o}: group or others may use it (the daemon makes it 0700); {refuse}"
    return None


def socket_dir_problem(socket_path: str) -> str | None:
    """Rule 1: if the socket exists, its directory is private. (No socket: nothing to trust yet; connecting then
    fails as "not running".)"""
    if not applies() or not os.path.lexists(socket_path):
        return None
    return private_dir_problem(os.path.dirname(socket_path) or ".", "the socket's directory")


def spool_dir_problem(spool_dir: str) -> str | None:
    """Rule 3: the announced spool directory is absolute and private."""
    if not applies():
        return None
    if not os.path.isabs(spool_dir):
        return f"the daemon announced the spool directory {spool_dir!r}, which is not an absolute path"
    return private_dir_problem(spool_dir, "the spool directory the daemon announced,")


def peer_uid(conn: socket.socket) -> int | None:
    """The user id of the process at the other end of a connected Unix socket, or None where Python cannot ask."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def peer_problem(conn: socket.socket, socket_path: str) -> str | None:
    """Why the server is not ours (its user id differs from ours), or None."""
    if not applies():
        return None
    uid = peer_uid(conn)
    me = my_uid()
    if uid is not None and uid != me:
        return (
            f"the daemon on {socket_path} runs as user id {uid}, not as you ({me}); refusing to send it images "
            "(another user may be posing as luna-daemon)"
        )
    return None

"""Issue 10.4: the node pack's Windows branches, run here on Linux as unit tests (no Windows CPython exists on this
machine; comfyui/README.md says what only a real Windows machine can confirm).

``sys.platform`` is monkeypatched to ``win32`` around the code under test only. The named pipe is played by a real
byte stream (one end of a socket pair, opened as a file, as ``open()`` opens a pipe on Windows), with the real
framing and handshake on it; the Windows API calls are stand-ins that record what they were asked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import types

import pytest

from conftest import REPO
from helpers import recv, send
from luna_multi_saver import autostart, client, trust


@pytest.fixture
def windows(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")


def test_the_default_pipe_is_the_daemons(windows, monkeypatch):
    # src/paths.rs: \\.\pipe\luna-daemon-<USERNAME>, "user" when USERNAME is unset.
    monkeypatch.delenv("LUNA_DAEMON_SOCKET", raising=False)
    monkeypatch.setenv("USERNAME", "Alice")
    assert client.default_socket() == r"\\.\pipe\luna-daemon-Alice"
    monkeypatch.delenv("USERNAME")
    assert client.default_socket() == r"\\.\pipe\luna-daemon-user"
    monkeypatch.setenv("LUNA_DAEMON_SOCKET", r"\\.\pipe\custom")
    assert client.default_socket() == r"\\.\pipe\custom"


def test_the_paths_rs_table_names_the_same_pipe():
    # The Python default and the daemon's must be one name: both spell it from USERNAME.
    text = (REPO / "src" / "paths.rs").read_text()
    assert r'format!(r"\\.\pipe\luna-daemon-{user}")' in text
    assert 'std::env::var("USERNAME").unwrap_or_else(|_| "user".to_owned())' in text


def test_the_unix_trust_checks_do_not_apply_to_a_pipe(windows):
    assert not trust.applies()
    assert trust.private_dir_problem("/nonexistent-but-irrelevant", "x") is None


class FakePipe:
    """The daemon's end of a pipe: answers hello with a welcome and stats with stats, on a real byte stream."""

    def __init__(self, spool: str):
        self.ours, self.theirs = socket.socketpair()
        self.opened: list[tuple[str, str]] = []
        self.spool = spool
        self.requests: list[dict] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def open(self, path: str, mode: str, buffering: int):
        self.opened.append((path, mode))
        assert buffering == 0, "a pipe is read unbuffered: a reply is never stuck in a Python buffer"
        return self.ours.makefile("rwb", buffering=0)

    def _serve(self) -> None:
        while (message := recv(self.theirs)) is not None:
            self.requests.append(message)
            if message["type"] == "hello":
                send(
                    self.theirs,
                    {
                        "type": "welcome",
                        "version": 1,
                        "daemon_version": "fake",
                        "spool_dir": self.spool,
                        "max_frame_len": 1 << 20,
                        "segment_header_len": 64,
                    },
                )
            else:
                send(self.theirs, {"type": "stats", "queue_depth": 0})

    def hang_up(self) -> None:
        self.theirs.shutdown(socket.SHUT_RDWR)
        self.theirs.close()


def test_the_client_speaks_the_protocol_over_the_pipe(windows, monkeypatch, tmp_path):
    pipe = FakePipe(str(tmp_path))
    monkeypatch.setattr(client, "_pipe_opener", pipe.open)
    monkeypatch.setattr(client, "_load_winapi", lambda: None)
    c = client.Client.connect(r"\\.\pipe\luna-daemon-Alice", "win-test")
    try:
        assert pipe.opened == [(r"\\.\pipe\luna-daemon-Alice", "r+b")]
        assert isinstance(c._conn, client._PipeTransport)
        assert c.welcome["spool_dir"] == str(tmp_path)
        assert c.stats()["queue_depth"] == 0
        assert [r["type"] for r in pipe.requests] == ["hello", "stats"]
        assert pipe.requests[0]["protocol"] == "luna-daemon" and pipe.requests[0]["pid"] == os.getpid()
    finally:
        c.close()


def test_a_busy_pipe_is_waited_for_once(windows, monkeypatch, tmp_path):
    pipe = FakePipe(str(tmp_path))
    waited: list[tuple[str, int]] = []
    attempts = []

    def busy_then_free(path, mode, buffering):
        attempts.append(path)
        if len(attempts) == 1:
            error = OSError(22, "All pipe instances are busy")
            error.winerror = client.ERROR_PIPE_BUSY
            raise error
        return pipe.open(path, mode, buffering)

    winapi = types.SimpleNamespace(WaitNamedPipe=lambda name, ms: waited.append((name, ms)))
    transport = client._PipeTransport(r"\\.\pipe\p", opener=busy_then_free, winapi=winapi)
    transport.close()
    assert waited == [(r"\\.\pipe\p", client.PIPE_BUSY_WAIT_MS)] and len(attempts) == 2


def test_no_pipe_means_unreachable_with_the_pipe_name(windows, monkeypatch):
    def missing(path, mode, buffering):
        raise FileNotFoundError(2, "The system cannot find the file specified")

    monkeypatch.setattr(client, "_pipe_opener", missing)
    with pytest.raises(client.DaemonUnreachable, match=r"cannot reach luna-daemon at \\\\\.\\pipe\\luna-daemon-x"):
        client.Client.connect(r"\\.\pipe\luna-daemon-x")


def test_a_daemon_that_closed_its_end_of_the_pipe_is_noticed(windows, monkeypatch, tmp_path):
    pipe = FakePipe(str(tmp_path))
    monkeypatch.setattr(client, "_pipe_opener", pipe.open)
    broken = {"now": False}

    def peek(handle, size):
        if broken["now"]:
            raise BrokenPipeError(32, "The pipe has been ended")
        return (0, 0)

    monkeypatch.setattr(client, "_load_winapi", lambda: types.SimpleNamespace(PeekNamedPipe=peek))
    monkeypatch.setitem(sys.modules, "msvcrt", types.SimpleNamespace(get_osfhandle=lambda fd: 1000 + fd))
    c = client.Client.connect(r"\\.\pipe\p")
    try:
        assert not c._peer_gone()
        broken["now"] = True
        assert c._peer_gone(), "a restarted daemon is reconnected to before the next submit"
    finally:
        c.close()


# -- auto-start ---------------------------------------------------------------------------------------------------


def test_autostart_starts_the_daemon_without_a_console_window_and_outside_comfyuis_job(windows):
    kwargs = autostart.detached_kwargs()
    flags = kwargs["creationflags"]
    # The documented values of winbase.h (what subprocess.CREATE_NO_WINDOW etc. are on Windows).
    assert flags & 0x08000000, "CREATE_NO_WINDOW"
    assert flags & 0x00000008, "DETACHED_PROCESS"
    assert flags & 0x00000200, "CREATE_NEW_PROCESS_GROUP"
    assert flags & 0x01000000, "CREATE_BREAKAWAY_FROM_JOB"
    assert kwargs["close_fds"] is True, "no inherited handles but stdin/stdout/stderr"
    assert "start_new_session" not in kwargs
    assert autostart.detached_kwargs(breakaway=False)["creationflags"] == 0x08000000 | 0x00000008 | 0x00000200
    for name in ("CREATE_NO_WINDOW", "DETACHED_PROCESS", "CREATE_NEW_PROCESS_GROUP", "CREATE_BREAKAWAY_FROM_JOB"):
        if hasattr(subprocess, name):  # on a Windows CPython, the module's own values
            assert getattr(subprocess, name) == getattr(autostart, name)


def test_autostart_on_posix_is_a_new_session():
    assert autostart.detached_kwargs() == {"start_new_session": True, "close_fds": True}


def test_a_job_that_forbids_breakaway_starts_the_daemon_inside_it(windows, monkeypatch):
    calls: list[dict] = []

    def popen(command, **kwargs):
        calls.append(kwargs)
        if kwargs["creationflags"] & autostart.CREATE_BREAKAWAY_FROM_JOB:
            raise PermissionError(13, "Access is denied")
        return types.SimpleNamespace(pid=4242)

    monkeypatch.setattr(autostart.subprocess, "Popen", popen)
    proc = autostart._popen_detached(["luna-daemon.exe", "serve"], subprocess.DEVNULL, {})
    assert proc.pid == 4242
    assert [c["creationflags"] for c in calls] == [
        autostart.DETACHED_FLAGS | autostart.CREATE_BREAKAWAY_FROM_JOB,
        autostart.DETACHED_FLAGS,
    ]
    assert all(c["stdin"] is subprocess.DEVNULL and c["close_fds"] for c in calls)


def test_on_windows_the_wheels_exe_is_started_directly(windows, monkeypatch, tmp_path):
    # Not `python -m luna_daemon.server`: that would keep a Python process as the daemon's parent.
    monkeypatch.delenv("LUNA_DAEMON_BIN", raising=False)
    monkeypatch.setattr(autostart.shutil, "which", lambda name: None)
    monkeypatch.setattr(autostart.importlib.util, "find_spec", lambda name: object())
    exe = str(tmp_path / "Scripts" / "luna-daemon.exe")
    monkeypatch.setitem(sys.modules, "luna_daemon", types.SimpleNamespace(find_binary=lambda: exe))
    assert autostart.daemon_command() == [exe, "serve"]
    monkeypatch.setitem(sys.modules, "luna_daemon", types.SimpleNamespace(find_binary=_not_found))
    assert autostart.daemon_command() == [sys.executable, "-m", "luna_daemon.server"]


def _not_found() -> str:
    raise RuntimeError("cannot find the luna-daemon binary")


def test_the_state_dir_and_log_on_windows(windows, monkeypatch, tmp_path):
    monkeypatch.delenv("LUNA_DAEMON_STATE_DIR", raising=False)
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "AppData" / "Local"))
    assert autostart.state_dir() == os.path.join(str(tmp_path / "AppData" / "Local"), "luna-daemon")


# -- python -m luna_daemon.server (the wheel's launcher) ----------------------------------------------------------


@pytest.fixture
def launcher():
    import importlib.util

    spec = importlib.util.spec_from_file_location("luna_launcher_w", REPO / "python" / "luna_daemon" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_launcher_runs_the_exe_as_a_child_and_passes_its_exit_code(windows, launcher, monkeypatch, tmp_path):
    # ComfyUI portable's embedded Python: python_embeded\python.exe -m luna_daemon.server, binary in its Scripts\.
    scripts = tmp_path / "python_embeded" / "Scripts"
    scripts.mkdir(parents=True)
    exe = scripts / "luna-daemon.exe"
    exe.write_bytes(b"MZ")
    exe.chmod(0o755)
    monkeypatch.setattr(launcher, "_script_dirs", lambda: [str(scripts)])
    calls = []
    monkeypatch.setattr(launcher.subprocess, "call", lambda argv, **kw: calls.append((argv, kw)) or 3)
    monkeypatch.setattr(launcher.os, "execv", lambda *a: pytest.fail("no execv on Windows"))
    monkeypatch.setattr(launcher, "_has_console", lambda: True)
    assert launcher.run(["serve", "--socket", r"\\.\pipe\x"]) == 3
    assert calls == [([str(exe), "serve", "--socket", r"\\.\pipe\x"], {"creationflags": 0})]
    # Without a console of its own (pythonw, or started detached), the daemon must not open a console window.
    monkeypatch.setattr(launcher, "_has_console", lambda: False)
    launcher.run(["serve"])
    assert calls[-1][1] == {"creationflags": 0x08000000}


def test_the_launcher_looks_for_the_exe_name(windows, launcher):
    assert launcher._exe("luna-daemon") == "luna-daemon.exe"


def test_without_windll_a_console_is_assumed(launcher):
    # On Linux ctypes has no windll: the launcher keeps the default flags rather than guess.
    assert launcher._has_console() is True

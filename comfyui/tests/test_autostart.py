"""The node starts luna-daemon itself (issue 7): with daemon_save ON and no daemon answering, it starts one detached
(its own session, same user, the socket/spool/state the environment names), waits for the handshake and submits to
it; the off switches (node input, ``LUNA_DAEMON_AUTOSTART=0``) give the old local fallback and start nothing; a
running daemon is never doubled; a daemon that cannot start means a local save that says why.

Every daemon a test starts is stopped by the test (``luna-daemon stop``, then the instance lock is seen released).
Nothing is timed: readiness and job completion are polled.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import helpers
from conftest import PACK, READY_DEADLINE_S
from helpers import decoded, files_under, noise
from luna_multi_saver import autostart, client, node
from luna_multi_saver.node import LunaMultiSaver
from luna_multi_saver.pixels import to_uint8

FALLBACK = "[LunaMultiSaver] Daemon save selected but daemon not available..."


class Private:
    """A socket, spool and state directory of the test's own, named through the environment as a user would."""

    def __init__(self, binary: Path):
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="luna-as-", dir="/tmp" if os.path.isdir("/tmp") else None))
        self.socket = str(self.root / "run" / "luna.sock")
        self.spool = self.root / "spool"
        self.state = self.root / "state"
        self.marker = self.root / "started"

    def answers(self) -> bool:
        try:
            client.Client.connect(self.socket, "test-probe").close()
        except client.ClientError:
            return False
        return True

    def recording_binary(self) -> str:
        """A wrapper that notes each start in ``marker`` and then runs the real binary."""
        script = self.root / "luna-daemon-wrapper"
        script.write_text(f'#!/bin/sh\necho "$$" >> "{self.marker}"\nexec "{self.binary}" "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return str(script)

    def lock_is_free(self) -> bool:
        lock = self.state / "daemon.lock"
        if not lock.exists():
            return True
        with open(lock, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(f, fcntl.LOCK_UN)
            return True

    def daemon_pid(self) -> int:
        return int((self.state / "daemon.lock").read_text().strip())

    def stop(self) -> None:
        """``luna-daemon stop``, then waits until the daemon has exited (its instance lock is released)."""
        if self.answers():
            subprocess.run([str(self.binary), "stop", "--socket", self.socket], check=True, capture_output=True)
        deadline = time.monotonic() + READY_DEADLINE_S
        while not self.lock_is_free():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon in {self.state} did not exit after `stop`")
            time.sleep(0.02)


@pytest.fixture
def private(daemon_binary, monkeypatch):
    p = Private(daemon_binary)
    monkeypatch.delenv("LUNA_DAEMON_AUTOSTART", raising=False)  # conftest turns it off for every other test
    monkeypatch.setenv("LUNA_DAEMON_BIN", str(daemon_binary))
    monkeypatch.setenv("LUNA_DAEMON_SOCKET", p.socket)
    monkeypatch.setenv("LUNA_DAEMON_SPOOL_DIR", str(p.spool))
    monkeypatch.setenv("LUNA_DAEMON_STATE_DIR", str(p.state))
    # The node's own wait is a few seconds; a loaded CI machine gets the same guard as every other daemon start.
    monkeypatch.setenv(autostart.ENV_DEADLINE, str(READY_DEADLINE_S))
    yield p
    node.DAEMON_CLIENTS.close()
    p.stop()
    shutil.rmtree(p.root, ignore_errors=True)


def run_node(**inputs) -> tuple[LunaMultiSaver, dict]:
    return helpers.run_node(**{"daemon_save": True, "format_1": "png", **inputs})


def wait_job(socket_path: str, job_id: str) -> dict:
    with client.Client.connect(socket_path, "test-waiter") as c:
        return c.wait(job_id)


# -- auto-start ---------------------------------------------------------------------------------------------------


def test_the_node_starts_a_daemon_when_none_answers_and_submits_to_it(private, comfy_dirs, capsys):
    assert not private.answers()
    images = noise(2, 40, 56)
    saver, result = run_node(image_1=images)
    out = capsys.readouterr().out

    assert FALLBACK not in out
    started = saver.last_started
    assert started is not None and started.pid is not None
    assert f"[LunaMultiSaver] Started luna-daemon (pid {started.pid}" in out
    job = saver.last_job
    assert job is not None
    assert f"[LunaMultiSaver] Submitted 2 images to daemon (Job ID: {job.job_id})" in out
    assert [p["type"] for p in result["ui"]["images"]] == ["temp", "temp"], "previews, not local saves"

    # Detached: its own session and process group, so ComfyUI's Ctrl+C or exit does not reach it.
    assert os.getsid(started.pid) == started.pid != os.getsid(0)
    assert started.command == [str(private.binary), "serve"]
    assert private.daemon_pid() == started.pid, "it runs with the state dir from LUNA_DAEMON_STATE_DIR"
    assert private.spool.is_dir(), "and the spool dir from LUNA_DAEMON_SPOOL_DIR"
    log = Path(started.log)
    text = log.read_text()
    assert log.parent == private.state and "started by the Luna Multi Saver node" in text
    assert "\x1b[" not in text, "no colour codes in the log file"

    status = wait_job(private.socket, job.job_id)
    assert [i["state"] for i in status["images"]] == ["written", "written"]
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG_0.png", "ORIG/img_ORIG_1.png"]
    for b in range(2):
        assert (decoded(comfy_dirs.output / "ORIG" / f"img_ORIG_{b}.png") == to_uint8(images[b])).all()
    assert private.answers(), "the daemon is left running for the next execution"


def test_a_second_execution_uses_the_started_daemon_and_never_starts_another(private, comfy_dirs, monkeypatch):
    monkeypatch.setenv("LUNA_DAEMON_BIN", private.recording_binary())
    first, _ = run_node(image_1=noise(1))
    assert first.last_started is not None
    node.DAEMON_CLIENTS.close()  # a new ComfyUI process, say: no warm connection
    second, _ = run_node(image_1=noise(1, seed=2))
    assert second.last_job is not None and second.last_started is None
    assert autostart.ensure_daemon(private.socket).pid is None, "one answers: nothing is started"
    assert len(private.marker.read_text().split()) == 1, "exactly one daemon was ever started"
    # Both jobs, not only the second: with several workers the second may be written before the first.
    for saver in (first, second):
        wait_job(private.socket, saver.last_job.job_id)
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png", "ORIG/img_ORIG_00001.png"]


def test_a_running_daemon_is_used_not_doubled(daemon, comfy_dirs, monkeypatch, capsys):
    monkeypatch.delenv("LUNA_DAEMON_AUTOSTART", raising=False)
    monkeypatch.setenv("LUNA_DAEMON_BIN", "/nonexistent/luna-daemon")
    saver, _ = run_node(image_1=noise(1))
    assert saver.last_job is not None and saver.last_started is None
    assert "Started luna-daemon" not in capsys.readouterr().out


CHILD = textwrap.dedent(
    """
    import sys, types
    sys.path.insert(0, {pack!r})
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_output_directory = lambda: {output!r}
    folder_paths.get_temp_directory = lambda: {temp!r}
    sys.modules["folder_paths"] = folder_paths
    import numpy as np
    from luna_multi_saver.node import LunaMultiSaver

    saver = LunaMultiSaver()
    batch = np.random.default_rng(5).random((6, 384, 384, 3), dtype=np.float32)
    saver.save_images(save_path="", filename="late", daemon_save=True, save_mode="parallel",
                      quality_gate="disabled", min_quality_threshold=0.3, image_1=batch, format_1="png")
    print(saver.last_job.job_id, saver.last_started.pid, flush=True)
    """
)


def test_a_daemon_started_by_the_node_outlives_comfyui_and_finishes_its_queue(private, comfy_dirs):
    script = CHILD.format(pack=str(PACK), output=str(comfy_dirs.output), temp=str(comfy_dirs.temp))
    # "ComfyUI" submits a job and exits at once, with the daemon's queue most likely not done yet.
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    job_id, pid = done.stdout.splitlines()[-1].split()
    assert f"Submitted 6 images to daemon (Job ID: {job_id})" in done.stdout and FALLBACK not in done.stdout
    assert private.answers(), "the daemon outlived the process that started it"
    assert private.daemon_pid() == int(pid)
    status = wait_job(private.socket, job_id)
    assert [i["state"] for i in status["images"]] == ["written"] * 6
    assert files_under(comfy_dirs.output) == [f"ORIG/late_ORIG_{b}.png" for b in range(6)]


# -- off switches and failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["node input off", "LUNA_DAEMON_AUTOSTART=0", "LUNA_DAEMON_AUTOSTART=false"])
def test_autostart_off_means_the_local_fallback_and_nothing_started(private, comfy_dirs, monkeypatch, capsys, how):
    monkeypatch.setenv("LUNA_DAEMON_BIN", private.recording_binary())
    inputs = {}
    if how == "node input off":
        inputs["autostart_daemon"] = False
    else:
        monkeypatch.setenv("LUNA_DAEMON_AUTOSTART", how.split("=")[1])
    saver, result = run_node(image_1=noise(2), **inputs)
    out = capsys.readouterr().out
    assert FALLBACK in out and "is it running" in out and "auto-start" not in out
    assert saver.last_job is None and saver.last_started is None
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG_0.png", "ORIG/img_ORIG_1.png"]
    assert [i["type"] for i in result["ui"]["images"]] == ["output", "output"]
    assert not private.marker.exists(), "no daemon was started"
    assert not private.answers() and not private.state.exists()


def test_daemon_save_off_never_starts_a_daemon(private, comfy_dirs, monkeypatch):
    monkeypatch.setenv("LUNA_DAEMON_BIN", private.recording_binary())
    run_node(daemon_save=False, image_1=noise(1))
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png"]
    assert not private.marker.exists()


def test_a_daemon_that_cannot_start_means_a_local_save_with_the_reason(private, comfy_dirs, monkeypatch, capsys):
    failing = private.root / "broken-daemon"
    failing.write_text('#!/bin/sh\necho "luna-daemon: error: something is wrong here" >&2\nexit 3\n')
    failing.chmod(0o755)
    monkeypatch.setenv("LUNA_DAEMON_BIN", str(failing))
    monkeypatch.setattr(autostart, "LOST_RACE_GRACE_S", 0.05)
    saver, _ = run_node(image_1=noise(1))
    out = capsys.readouterr().out
    assert FALLBACK in out and "auto-start failed" in out
    assert "exited with status 3" in out and "something is wrong here" in out, out
    assert saver.last_job is None
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png"]


def test_no_daemon_installed_means_a_local_save_that_says_how_to_install_one(private, comfy_dirs, monkeypatch, capsys):
    monkeypatch.setattr(autostart, "daemon_command", lambda: None)
    run_node(image_1=noise(1))
    out = capsys.readouterr().out
    assert FALLBACK in out and "no luna-daemon to start" in out and "pip install" in out
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png"]


# -- which daemon -------------------------------------------------------------------------------------------------


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_the_daemon_command_prefers_luna_daemon_bin_then_path_then_the_wheel(monkeypatch, tmp_path):
    on_path = tmp_path / "bin"
    on_path.mkdir()
    monkeypatch.setenv("LUNA_DAEMON_BIN", "/opt/luna/luna-daemon")
    assert autostart.daemon_command() == ["/opt/luna/luna-daemon", "serve"]

    monkeypatch.delenv("LUNA_DAEMON_BIN")
    binary = _executable(on_path / "luna-daemon")
    monkeypatch.setenv("PATH", str(on_path))
    assert autostart.daemon_command() == [str(binary), "serve"]

    binary.unlink()
    wheel = tmp_path / "site"
    (wheel / "luna_daemon").mkdir(parents=True)
    (wheel / "luna_daemon" / "__init__.py").write_text("")
    (wheel / "luna_daemon" / "server.py").write_text("")
    monkeypatch.syspath_prepend(str(wheel))
    try:
        assert autostart.daemon_command() == [sys.executable, "-m", "luna_daemon.server"]
    finally:
        for name in ("luna_daemon.server", "luna_daemon"):
            sys.modules.pop(name, None)


def test_no_daemon_anywhere_is_none(monkeypatch, tmp_path):
    monkeypatch.delenv("LUNA_DAEMON_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(autostart.importlib.util, "find_spec", lambda name: None)
    assert autostart.daemon_command() is None


def test_the_state_dir_follows_the_daemons_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("LUNA_DAEMON_STATE_DIR", str(tmp_path / "s"))
    assert autostart.state_dir() == str(tmp_path / "s")
    monkeypatch.delenv("LUNA_DAEMON_STATE_DIR")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
        assert autostart.state_dir() == str(tmp_path / "xdg" / "luna-daemon")
        monkeypatch.delenv("XDG_STATE_HOME")
        assert autostart.state_dir() == os.path.expanduser("~/.local/state/luna-daemon")


def test_the_log_goes_to_the_temp_dir_when_the_state_dir_cannot_be_used(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("LUNA_DAEMON_STATE_DIR", str(blocker / "state"))
    monkeypatch.setattr(autostart.tempfile, "gettempdir", lambda: str(tmp_path))
    fd, path = autostart._open_log()
    try:
        assert path == str(tmp_path / f"luna-daemon-{os.geteuid()}.log")
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    finally:
        os.close(fd)


def test_the_off_switch_values(monkeypatch):
    for value, off in [("0", True), ("false", True), ("OFF", True), ("no", True), ("1", False), ("", False)]:
        monkeypatch.setenv("LUNA_DAEMON_AUTOSTART", value)
        assert autostart.switched_off() is off, value
        assert autostart.enabled(True) is not off
        assert autostart.enabled(False) is False

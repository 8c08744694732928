"""``luna-daemon doctor`` on the set-ups users get wrong (issue 7): each broken set-up is reported by the check that
should catch it, with the outcome and a hint. The binary is run as a user would run it (``--json`` for reading).

Some set-ups need root to build here (a directory owned by another user, a tmpfs mount); those tests say so and skip
when they cannot build them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import DaemonProcess
from luna_multi_saver import client

NOBODY = 65534


class Setup:
    """A socket, spool, state and output directory in a private temp dir, all healthy to start with."""

    def __init__(self, binary: Path, root: Path):
        self.binary = binary
        self.root = root
        self.run_dir = root / "run"
        self.socket = str(self.run_dir / "luna.sock")
        self.spool = root / "spool"
        self.state = root / "state"
        self.output = root / "output"

    def doctor(self, *extra: str, socket: str | None = None) -> tuple[int, dict[str, dict]]:
        args = [str(self.binary), "doctor", "--json", "--socket", socket or self.socket]
        args += ["--spool-dir", str(self.spool), "--state-dir", str(self.state), *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUNA_DAEMON_")}
        done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        assert done.returncode in (0, 1), done.stderr
        findings = json.loads(done.stdout)
        return done.returncode, {f["check"]: f for f in findings}


@pytest.fixture
def setup(daemon_binary):
    root = Path(tempfile.mkdtemp(prefix="luna-dr-", dir="/tmp" if os.path.isdir("/tmp") else None))
    s = Setup(daemon_binary, root)
    yield s
    shutil.rmtree(root, ignore_errors=True)


def _mount_tmpfs(target: Path, options: str) -> None:
    """Mounts a tmpfs at ``target`` or skips the test, saying why."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8); this set-up cannot be built here")
    target.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): set-up not testable")


def _umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], check=False, capture_output=True)


def test_a_healthy_setup_passes(setup, daemon_binary):
    d = DaemonProcess(daemon_binary, setup.root).start()
    try:
        code, found = setup.doctor("--output-dir", str(setup.output), "--client-protocol", str(client.PROTOCOL_VERSION))
    finally:
        d.stop()
    assert found["daemon"]["outcome"] == "ok" and "answers on" in found["daemon"]["detail"]
    assert found["instance"]["outcome"] == "ok"
    assert found["output directory"]["outcome"] == "ok"
    assert found["client protocol"]["outcome"] == "ok"
    assert all(f["outcome"] != "fail" for f in found.values()), found
    assert code == 0


def test_a_socket_dir_open_to_everyone(setup):
    setup.run_dir.mkdir(mode=0o700)
    setup.run_dir.chmod(0o777)
    _, found = setup.doctor()
    f = found["socket directory"]
    assert f["outcome"] == "warn" and "777" in f["detail"] and "other users" in f["detail"]
    assert "chmod 700" in f["hint"] or "tightens" in f["hint"]


def test_a_socket_dir_owned_by_another_user(setup):
    setup.run_dir.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(setup.run_dir, NOBODY, NOBODY)
    else:
        pytest.skip("only root can give a directory to another user; the other-user set-up cannot be built here")
    code, found = setup.doctor()
    f = found["socket directory"]
    assert f["outcome"] == "fail" and f"user id {NOBODY}" in f["detail"] and "not to you" in f["detail"]
    assert "XDG_RUNTIME_DIR" in f["hint"]
    assert code == 1


def test_a_stale_socket(setup, daemon_binary):
    d = DaemonProcess(daemon_binary, setup.root).start()
    d.kill()  # SIGKILL: the socket file stays behind, nobody listens
    assert Path(setup.socket).exists()
    _, found = setup.doctor()
    f = found["daemon"]
    assert f["outcome"] == "warn" and "stale socket" in f["detail"] and setup.socket in f["detail"]
    assert "replaces the stale socket" in f["hint"]


def test_no_daemon_running(setup):
    _, found = setup.doctor()
    assert found["daemon"]["outcome"] == "warn" and "no daemon is running" in found["daemon"]["detail"]


def test_another_instance_holds_the_state_dir_on_another_socket(setup, daemon_binary):
    d = DaemonProcess(daemon_binary, setup.root).start()
    try:
        other_socket = str(setup.root / "elsewhere" / "other.sock")
        code, found = setup.doctor(socket=other_socket)
    finally:
        d.stop()
    f = found["instance"]
    assert f["outcome"] == "fail" and f"daemon pid {d.proc.pid} holds" in f["detail"] and other_socket in f["detail"]
    assert "another --socket" in f["hint"]
    assert code == 1


def test_an_unwritable_output_dir(setup):
    if os.geteuid() != 0:
        setup.output.mkdir()
        setup.output.chmod(0o500)
    else:
        # Permission bits do not stop root: a read-only mount does.
        _mount_tmpfs(setup.output, "size=1m,ro")
    try:
        code, found = setup.doctor("--output-dir", str(setup.output))
    finally:
        if os.geteuid() == 0:
            _umount(setup.output)
        else:
            setup.output.chmod(0o700)
    f = found["output directory"]
    assert f["outcome"] == "fail" and "cannot write into" in f["detail"] and str(setup.output) in f["detail"]
    assert "permissions" in f["hint"]
    assert code == 1


def test_a_tiny_tmpfs_spool(setup):
    """Docker's default /dev/shm is 64 MiB; 16 MiB is well below what the doctor accepts."""
    mount = setup.root / "shm"
    _mount_tmpfs(mount, "size=16m,mode=0700")
    try:
        setup.spool = mount / "spool"
        code, found = setup.doctor()
    finally:
        _umount(mount)
    f = found["spool space"]
    assert f["outcome"] == "fail" and "MiB free" in f["detail"] and "--shm-size" in f["hint"]
    assert "spool filesystem" not in found, "a tmpfs is the right kind of filesystem"
    assert code == 1


def test_a_client_protocol_mismatch(setup):
    code, found = setup.doctor("--client-protocol", "99")
    f = found["client protocol"]
    assert f["outcome"] == "fail" and "protocol 99" in f["detail"]
    assert f"this daemon speaks {client.PROTOCOL_VERSION}" in f["detail"] and "upgrade" in f["hint"]
    assert code == 1


def test_the_human_output_names_the_problem_and_the_fix(setup):
    args = [str(setup.binary), "doctor", "--socket", setup.socket, "--spool-dir", str(setup.spool)]
    args += ["--state-dir", str(setup.state), "--client-protocol", "99"]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "[FAIL] client protocol: the client speaks protocol 99" in done.stdout
    assert "-> upgrade the older of the two" in done.stdout

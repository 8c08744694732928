"""Test setup: the node pack on sys.path, stand-ins for ComfyUI's ``folder_paths`` and ``comfy.cli_args``, the
shared reference files, and a real luna-daemon in a temp dir.

Run from the repository root: ``python -m pytest comfyui/tests`` (no ComfyUI, no torch needed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PACK = TESTS.parent
REPO = PACK.parent
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference" / "comfyui"

sys.path.insert(0, str(PACK))
sys.path.insert(0, str(TESTS))

# Stand-ins for the two ComfyUI modules the node uses. Tests point the directories at temp dirs.
folder_paths = types.ModuleType("folder_paths")
folder_paths.output_directory = str(Path(tempfile.gettempdir()) / "luna-tests-unset-output")
folder_paths.temp_directory = str(Path(tempfile.gettempdir()) / "luna-tests-unset-temp")
folder_paths.get_output_directory = lambda: folder_paths.output_directory
folder_paths.get_temp_directory = lambda: folder_paths.temp_directory
comfy = types.ModuleType("comfy")
cli_args = types.ModuleType("comfy.cli_args")
cli_args.args = types.SimpleNamespace(disable_metadata=False)
comfy.cli_args = cli_args
sys.modules.setdefault("folder_paths", folder_paths)
sys.modules.setdefault("comfy", comfy)
sys.modules.setdefault("comfy.cli_args", cli_args)


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "wheel: builds or installs the release wheel; its own CI step (`make test-wheel`), not `make test`"
    )
    config.addinivalue_line("markers", "root: needs root (a file owned by another user); CI runs as root")


class ComfyDirs(types.SimpleNamespace):
    output: Path
    temp: Path


@pytest.fixture
def comfy_dirs(tmp_path, monkeypatch) -> ComfyDirs:
    """ComfyUI's output and temp directories, fresh for each test."""
    output = tmp_path / "output"
    temp = tmp_path / "temp"
    output.mkdir()
    temp.mkdir()
    monkeypatch.setattr(folder_paths, "output_directory", str(output))
    monkeypatch.setattr(folder_paths, "temp_directory", str(temp))
    monkeypatch.setattr(cli_args.args, "disable_metadata", False)
    return ComfyDirs(output=output, temp=temp)


@pytest.fixture
def reference() -> Path:
    """``../shared/reference/comfyui`` relative to the repository root."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference files not found at {REFERENCE} (they live in shared/ beside the repository)")
    return REFERENCE


@pytest.fixture(autouse=True)
def _no_autostart(monkeypatch):
    """No test starts a daemon behind its back: the node's auto-start is off unless a test turns it on."""
    monkeypatch.setenv("LUNA_DAEMON_AUTOSTART", "0")


@pytest.fixture(autouse=True)
def _fresh_daemon_clients():
    """The node keeps one warm daemon client per socket; no test sees another's."""
    from luna_multi_saver import node

    yield
    node.DAEMON_CLIENTS.close()


# -- the real daemon ---------------------------------------------------------------------------------------------


def _find_binary() -> Path:
    explicit = os.environ.get("LUNA_DAEMON_BIN")
    if explicit:
        return Path(explicit)
    candidates = [REPO / "target" / kind / "luna-daemon" for kind in ("release", "debug")]
    existing = [p for p in candidates if p.is_file()]
    if existing:
        return max(existing, key=lambda p: p.stat().st_mtime)
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("no luna-daemon binary in target/ and no cargo to build one")
    subprocess.run([cargo, "build", "--bin", "luna-daemon"], cwd=REPO, check=True)
    return REPO / "target" / "debug" / "luna-daemon"


@pytest.fixture(scope="session")
def daemon_binary() -> Path:
    return _find_binary()


READY_DEADLINE_S = 60.0  # only guards against a daemon that never comes up; nothing is timed


class DaemonProcess:
    """``luna-daemon serve`` with its socket, spool and state in a private temp dir."""

    def __init__(self, binary: Path, root: Path, extra_args: tuple[str, ...] = ()):
        self.binary = binary
        self.root = root
        self.socket = str(root / "run" / "luna.sock")
        self.spool = root / "spool"
        self.state = root / "state"
        self.log = root / "daemon.log"
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None

    def start(self) -> DaemonProcess:
        args = [str(self.binary), "serve", "--socket", self.socket, "--spool-dir", str(self.spool)]
        args += ["--state-dir", str(self.state), *self.extra_args]
        env = dict(os.environ, LUNA_DAEMON_LOG="debug")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        from luna_multi_saver import client

        deadline = time.monotonic() + READY_DEADLINE_S
        delay = 0.005
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"luna-daemon exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                client.Client.connect(self.socket, "test-ready").close()
                return
            except client.ClientError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"luna-daemon did not answer:\n{self.log.read_text()}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def client(self, name: str = "test"):
        from luna_multi_saver import client

        return client.Client.connect(self.socket, name)

    def kill(self) -> None:
        """SIGKILL, as the OOM killer would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()

    def segments(self) -> list[str]:
        return sorted(p.name for p in self.spool.iterdir()) if self.spool.is_dir() else []


@pytest.fixture
def daemon(daemon_binary, monkeypatch):
    """A running daemon; ``LUNA_DAEMON_SOCKET`` points the node and the client at it."""
    root = Path(tempfile.mkdtemp(prefix="luna-t-", dir="/tmp" if os.path.isdir("/tmp") else None))
    d = DaemonProcess(daemon_binary, root).start()
    monkeypatch.setenv("LUNA_DAEMON_SOCKET", d.socket)
    yield d
    from luna_multi_saver import node

    node.DAEMON_CLIENTS.close()
    d.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fake():
    """Makes scripted fake daemons (``helpers.FakeDaemon``) and closes each, with its directory, after the test."""
    from helpers import FakeDaemon

    daemons: list[FakeDaemon] = []

    def make(**kwargs) -> FakeDaemon:
        daemons.append(FakeDaemon(**kwargs))
        return daemons[-1]

    yield make
    for d in daemons:
        d.close()

"""The ``luna-daemon`` Python wheel (issue 7): built with maturin from the repository root's pyproject.toml,
installed offline into a fresh venv, it puts ``luna-daemon`` on the venv's PATH and makes
``python -m luna_daemon.server`` start the same daemon with the same flags; the node pack's client then saves through
it, and ``luna-daemon stop`` stops it.

These tests are marked ``wheel`` and are their own CI step, ``make test-wheel``: it builds the wheel once (a release
build, minutes on a fresh checkout of a small machine) and passes its directory in ``LUNA_DAEMON_WHEEL_DIR``; the
tests install that wheel. ``make test`` (``-m "not wheel"``) runs everything else, including the launcher's unit tests
at the end of this file. Run directly without ``LUNA_DAEMON_WHEEL_DIR``, the fixture builds the wheel itself once per
session. Without maturin that build skips, except under CI (``CI`` set), where a missing maturin is an error:
``make python-deps`` installs it (comfyui/requirements-dev.txt).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from conftest import READY_DEADLINE_S, REPO
from helpers import decoded, noise
from luna_multi_saver import client
from luna_multi_saver.pixels import to_uint8


def _maturin() -> list[str] | None:
    if importlib.util.find_spec("maturin") is not None:
        return [sys.executable, "-m", "maturin"]
    found = shutil.which("maturin")
    return [found] if found else None


def _crate_version() -> str:
    text = (REPO / "Cargo.toml").read_text()
    return re.search(r'(?m)^version\s*=\s*"([^"]+)"', text).group(1)


class Installed:
    def __init__(self, wheel: Path, venv: Path):
        self.wheel = wheel
        self.venv = venv
        scripts = "Scripts" if sys.platform == "win32" else "bin"
        self.python = venv / scripts / ("python.exe" if sys.platform == "win32" else "python")
        self.binary = venv / scripts / ("luna-daemon.exe" if sys.platform == "win32" else "luna-daemon")


WHEEL_DIR_ENV = "LUNA_DAEMON_WHEEL_DIR"


def _build_wheel(wheels: Path) -> None:
    maturin = _maturin()
    if maturin is None:
        message = "maturin is not installed (`pip install maturin` or `make python-deps`): the wheel is not tested"
        if os.environ.get("CI"):
            pytest.fail(message + " - and CI must test it")
        pytest.skip(message)
    env = dict(os.environ, CARGO_TARGET_DIR=str(REPO / "target"))
    build = subprocess.run(
        [*maturin, "build", "--release", "--out", str(wheels)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, f"maturin build failed:\n{build.stdout[-3000:]}\n{build.stderr[-5000:]}"


def _host_wheel(wheels: Path) -> Path:
    """This version's wheel for this platform in ``wheels`` (a directory may also hold other platforms' wheels)."""
    windows = sys.platform == "win32"
    found = [w for w in wheels.glob(f"luna_daemon-{_crate_version()}-py3-none-*.whl") if ("win" in w.name) == windows]
    assert found, f"no luna_daemon-{_crate_version()} wheel for this platform in {wheels}"
    return max(found, key=lambda w: w.stat().st_mtime)


@pytest.fixture(scope="session")
def installed_wheel() -> Installed:
    work = Path(tempfile.mkdtemp(prefix="luna-wheel-"))
    prebuilt = os.environ.get(WHEEL_DIR_ENV)
    if prebuilt:
        wheels = Path(prebuilt)
    else:
        wheels = work / "wheels"
        _build_wheel(wheels)
    wheel = _host_wheel(wheels)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    installed = Installed(wheel, venv)
    pip = [str(installed.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*pip, "--no-index", str(wheel)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"pip install of {wheel.name} failed:\n{done.stdout}\n{done.stderr}"
    yield installed
    shutil.rmtree(work, ignore_errors=True)


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without our variables and without the venv on PATH: the venv is used only by path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNA_DAEMON_")}
    env["PATH"] = os.defpath
    env.update(extra)
    return env


@pytest.mark.wheel
def test_the_wheel_carries_the_binary_and_the_launcher(installed_wheel):
    names = zipfile.ZipFile(installed_wheel.wheel).namelist()
    version = _crate_version()
    assert f"luna_daemon-{version}.data/scripts/luna-daemon" in names
    assert {"luna_daemon/__init__.py", "luna_daemon/__main__.py", "luna_daemon/server.py"} <= set(names)
    assert installed_wheel.wheel.name.startswith(f"luna_daemon-{version}-py3-none-")


@pytest.mark.wheel
def test_luna_daemon_is_on_the_venvs_path(installed_wheel):
    version = f"luna-daemon {_crate_version()}"
    done = subprocess.run([str(installed_wheel.binary), "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == version
    via_module = [str(installed_wheel.python), "-m", "luna_daemon", "--version"]
    done = subprocess.run(via_module, capture_output=True, text=True, check=True, env=_clean_env())
    assert done.stdout.strip() == version
    helped = [str(installed_wheel.python), "-m", "luna_daemon.server", "--help"]
    done = subprocess.run(helped, capture_output=True, text=True, check=True, env=_clean_env())
    assert "Usage: luna-daemon serve" in done.stdout and "--spool-dir" in done.stdout


@pytest.mark.wheel
def test_python_m_luna_daemon_server_runs_the_daemon(installed_wheel):
    root = Path(tempfile.mkdtemp(prefix="luna-wd-", dir="/tmp" if os.path.isdir("/tmp") else None))
    sock, spool, state, out = root / "run" / "luna.sock", root / "spool", root / "state", root / "out"
    log = root / "daemon.log"
    command = [str(installed_wheel.python), "-m", "luna_daemon.server"]
    command += ["--socket", str(sock), "--spool-dir", str(spool), "--state-dir", str(state)]
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=_clean_env())
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        delay = 0.005
        while True:
            assert proc.poll() is None, f"luna_daemon.server exited with {proc.returncode}:\n{log.read_text()}"
            try:
                client.Client.connect(str(sock), "test-ready").close()
                break
            except client.ClientError:
                assert time.monotonic() < deadline, f"the daemon did not answer:\n{log.read_text()}"
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        if sys.platform.startswith("linux"):
            exe = Path(f"/proc/{proc.pid}/exe").resolve()
            assert exe == installed_wheel.binary.resolve(), "the Python process became the bundled daemon (execv)"

        image = noise(1, 32, 48)
        with client.Client.connect(str(sock), "test-wheel") as c:
            assert c.welcome["spool_dir"] == str(spool)
            accepted = c.submit(client.JobOptions(output_dir=str(out), filename="wheel"), [client.SlotImages(image)])
            status = c.wait(accepted.job_id)
        assert [i["state"] for i in status["images"]] == ["written"]
        assert (decoded(out / "wheel.png") == to_uint8(image[0])).all()

        stop = [str(installed_wheel.binary), "stop", "--socket", str(sock)]
        done = subprocess.run(stop, capture_output=True, text=True, check=True, env=_clean_env())
        assert "stopping" in done.stdout
        assert proc.wait() == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


# -- the launcher, from the source tree (no wheel needed) ---------------------------------------------------------


@pytest.fixture
def launcher():
    """``python/luna_daemon/__init__.py`` loaded under a private name (so no installed copy is used instead)."""
    spec = importlib.util.spec_from_file_location(
        "luna_daemon_launcher", REPO / "python" / "luna_daemon" / "__init__.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_binary(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    binary = directory / "luna-daemon"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return binary


def test_the_launcher_prefers_the_interpreters_scripts_dir_over_path(launcher, monkeypatch, tmp_path):
    scripts = _fake_binary(tmp_path / "scripts")
    on_path = _fake_binary(tmp_path / "elsewhere")
    monkeypatch.setattr(launcher, "_script_dirs", lambda: [str(scripts.parent)])
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert launcher.find_binary() == str(scripts)


def test_the_launcher_falls_back_to_path(launcher, monkeypatch, tmp_path):
    on_path = _fake_binary(tmp_path / "elsewhere")
    monkeypatch.setattr(launcher, "_script_dirs", lambda: [str(tmp_path / "empty")])
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert launcher.find_binary() == str(on_path)


def test_the_launcher_says_what_is_missing(launcher, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(launcher, "_script_dirs", lambda: [str(tmp_path / "empty")])
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert launcher.run(["serve"]) == 127
    err = capsys.readouterr().err
    assert "cannot find the luna-daemon binary" in err and "pip install --force-reinstall luna-daemon" in err


def test_the_launchers_script_dirs_start_with_sysconfigs(launcher):
    import sysconfig

    assert launcher._script_dirs()[0] == sysconfig.get_path("scripts")

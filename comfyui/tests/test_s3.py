"""The node's ``output_root`` input: S3-compatible object storage through the daemon, against a real S3 server
(``s3s-fs``, the s3s project's file-system-backed server from crates.io; ``.ci/run`` installs it) and a real
daemon. Nothing is timed: readiness is polled and jobs are waited for through ``status``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import helpers
from conftest import DaemonProcess
from helpers import decoded, files_under, noise
from luna_multi_saver import node
from luna_multi_saver.pixels import to_uint8

BUCKET = "renders"


@pytest.fixture
def s3_server(tmp_path):
    """s3s-fs on a free loopback port; yields (endpoint, data directory). A bucket is a directory."""
    exe = os.environ.get("LUNA_S3S_FS") or shutil.which("s3s-fs")
    if exe is None:
        pytest.fail("s3s-fs is missing: cargo install s3s-fs --version 0.14.1 --features binary --locked")
    data = tmp_path / "s3"
    (data / BUCKET).mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [exe, "--host", "127.0.0.1", "--port", str(port), "--access-key", "ak", "--secret-key", "sk", str(data)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, "s3s-fs exited"
            assert time.monotonic() < deadline, "s3s-fs did not listen"
            time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", data
    proc.terminate()
    proc.wait()


@pytest.fixture
def s3_daemon(daemon_binary, s3_server, monkeypatch):
    endpoint, _ = s3_server
    for name, value in (("AWS_ACCESS_KEY_ID", "ak"), ("AWS_SECRET_ACCESS_KEY", "sk"), ("AWS_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    root = Path(tempfile.mkdtemp(prefix="luna-s3-", dir="/tmp" if os.path.isdir("/tmp") else None))
    d = DaemonProcess(daemon_binary, root, ("--s3-endpoint", endpoint)).start()
    monkeypatch.setenv("LUNA_DAEMON_SOCKET", d.socket)
    yield d
    node.DAEMON_CLIENTS.close()
    d.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_the_node_saves_to_object_storage_with_the_local_names(s3_daemon, s3_server, comfy_dirs):
    _, data = s3_server
    images = noise(2, 40, 30)
    inputs = {"image_1": images, "format_1": "png", "save_path": "%model_name%", "model_name": "x/foo_v1.safetensors"}
    saver, _ = helpers.run_node(True, output_root=f"s3://{BUCKET}/farm", **inputs)
    with s3_daemon.client("test-waiter") as c:
        status = c.wait(saver.last_job.job_id)
    assert [i["path"] for i in status["images"]] == [
        f"s3://{BUCKET}/farm/foo_v1/ORIG/img_ORIG_{b}.png" for b in range(2)
    ]
    assert all(
        i["url"].endswith(f"/{BUCKET}/farm/foo_v1/ORIG/img_ORIG_{b}.png") for b, i in enumerate(status["images"])
    )
    # The same names as a local save of the same execution.
    helpers.run_node(False, **inputs)
    assert files_under(data / BUCKET / "farm") == files_under(comfy_dirs.output)
    for b in range(2):
        assert (decoded(data / BUCKET / "farm" / "foo_v1" / "ORIG" / f"img_ORIG_{b}.png") == to_uint8(images[b])).all()


def test_a_daemon_without_s3_refuses_and_the_node_saves_locally(daemon, comfy_dirs, capsys):
    saver, _ = helpers.run_node(True, image_1=noise(1, 16, 16), format_1="png", output_root="s3://renders/x")
    assert saver.last_job is None
    out = capsys.readouterr().out
    assert "has no S3 configuration" in out and "saving locally instead" in out, out
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png"]


def test_without_the_daemon_an_object_root_is_saved_locally_with_a_message(comfy_dirs, capsys):
    helpers.run_node(False, image_1=noise(1, 16, 16), format_1="png", output_root="s3://renders/x")
    assert "needs the daemon (daemon_save on); saving locally" in capsys.readouterr().out
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png"]


def test_an_output_root_that_is_not_an_s3_url_is_a_clear_error(comfy_dirs):
    with pytest.raises(ValueError, match="is not an s3://bucket/prefix URL"):
        helpers.run_node(False, image_1=noise(1, 16, 16), output_root="/elsewhere")
    assert files_under(comfy_dirs.output) == []

"""The node and the client against the real luna-daemon binary, started in a temp dir for each test.

Nothing here is timed: readiness and job completion are polled (the daemon's ``status``), never slept for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import helpers
from conftest import PACK, DaemonProcess, folder_paths
from helpers import (
    comfy_frontend_exif,
    decoded,
    files_under,
    jpeg_exif,
    noise,
    png_text,
    user_comment,
    webp_chunks,
    webp_exif,
)
from luna_multi_saver import client, node, shm, templates
from luna_multi_saver.node import LunaMultiSaver
from luna_multi_saver.pixels import to_uint8

WHEN = templates.Timestamp(ms=1_741_334_704_000, utc_offset_s=3600)


@pytest.fixture(autouse=True)
def fixed_time(monkeypatch):
    monkeypatch.setattr(templates.Timestamp, "now", classmethod(lambda cls: WHEN))


def run_node(daemon_save: bool, **inputs) -> tuple[LunaMultiSaver, dict]:
    return helpers.run_node(daemon_save, **{"format_1": "png", **inputs})


def wait_for(d: DaemonProcess, job_id: str) -> dict:
    with d.client("test-waiter") as c:
        return c.wait(job_id)


# -- the node with daemon_save ON ---------------------------------------------------------------------------------


def test_node_hands_the_images_to_the_daemon(daemon, comfy_dirs, capsys):
    images = noise(2, 64, 96)
    saver, result = run_node(True, image_1=images, image_2=noise(seed=9), format_2="png", subdir_2=False)
    job = saver.last_job
    assert job is not None
    assert f"[LunaMultiSaver] Submitted 3 images to daemon (Job ID: {job.job_id})" in capsys.readouterr().out
    assert [p["type"] for p in result["ui"]["images"]] == ["temp"] * 3
    node.flush_previews()  # previews are rendered in the background
    assert all((comfy_dirs.temp / p["filename"]).is_file() for p in result["ui"]["images"])
    status = wait_for(daemon, job.job_id)
    assert [i["state"] for i in status["images"]] == ["written"] * 3
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG_0.png", "ORIG/img_ORIG_1.png", "img_UPSCALED.png"]
    for b in range(2):
        assert (decoded(comfy_dirs.output / "ORIG" / f"img_ORIG_{b}.png") == to_uint8(images[b])).all()


def test_two_executions_with_a_batch_name_are_one_batch_group(daemon, comfy_dirs):
    first, _ = run_node(True, image_1=noise(2, 16, 16), batch_name="evening")
    second, _ = run_node(True, image_1=noise(1, 16, 16, seed=3), batch_name=" evening ")
    with daemon.client("test-waiter") as c:
        for saver in (first, second):
            c.wait(saver.last_job.job_id)
        summary = c.batch_status("evening")
    assert summary["jobs"] == [first.last_job.job_id, second.last_job.job_id]
    assert (summary["images"], summary["written"], summary["failed"], summary["finished"]) == (3, 3, 0, True)
    assert summary["bytes"] == sum(p.stat().st_size for p in comfy_dirs.output.rglob("*.png"))


def test_the_node_asks_for_thumbnails_and_the_status_names_them(daemon, comfy_dirs):
    saver, _ = run_node(True, image_1=noise(1, 300, 200), thumbnails=True, thumbnail_size=50)
    status = wait_for(daemon, saver.last_job.job_id)
    thumb = Path(status["images"][0]["thumbnail"])
    assert thumb == comfy_dirs.output / "ORIG" / "_thumbnails" / "img_ORIG.png.webp"
    with Image.open(thumb) as t:
        assert (t.format, t.size) == ("WEBP", (33, 50))  # noise(1, 300, 200) is 300 high


def test_executions_of_a_zip_batch_land_in_one_archive_once(daemon, comfy_dirs, capsys):
    runs = [run_node(True, image_1=noise(n, 16, 16, seed=n), batch_name="zipped", zip_archive=True)[0] for n in (1, 2)]
    with daemon.client("test-waiter") as c:
        for saver in runs:
            c.wait(saver.last_job.job_id)
        summary = c.batch_status("zipped")
        while summary["archive_pending"]:  # polled, as the client's own wait does
            time.sleep(0.01)
            summary = c.batch_status("zipped")
    archive = comfy_dirs.output / "zipped.zip"
    assert (summary["archive"], summary["archived"]) == (str(archive), 3)
    with zipfile.ZipFile(archive) as z:
        assert z.testzip() is None
        assert sorted(z.namelist()) == [f for f in files_under(comfy_dirs.output) if f.endswith(".png")]
    run_node(True, image_1=noise(1, 16, 16), zip_archive=True)
    assert "zip_archive needs a batch_name" in capsys.readouterr().out


def test_a_date_template_with_colons_is_saved_by_the_daemon_with_underscores(daemon, comfy_dirs, capsys):
    saver, _ = run_node(True, image_1=noise(), filename="%date:yyyy-MM-dd hh:mm:ss%", save_path="%time:HH:MM%")
    assert saver.last_job is not None, capsys.readouterr().out
    assert [i["state"] for i in wait_for(daemon, saver.last_job.job_id)["images"]] == ["written"]
    assert files_under(comfy_dirs.output) == ["09_05/ORIG/2025-03-07 09_05_04_ORIG.png"]


def test_a_literal_colon_is_refused_by_the_daemon_and_not_retried_locally(daemon, comfy_dirs, capsys):
    with pytest.raises(node.JobRefused, match=r"^the daemon refused the job: filename .*a:b.* is not allowed"):
        run_node(True, image_1=noise(), filename="a:b")
    assert "not available" not in capsys.readouterr().out
    assert files_under(comfy_dirs.output) == []


def test_the_warm_up_at_pack_load_prepares_the_connection_and_the_segment_the_first_run_uses(daemon, comfy_dirs):
    node.start_prewarm().join()
    assert daemon.segments() == [f"{shm.segment_prefix(node.CLIENT_NAME)}-{os.getpid()}-0"]
    saver, _ = run_node(True, image_1=noise(4, 1024, 1024))  # the batch the warm segment is sized for
    assert saver.last_job.segment == daemon.segments()[0] and len(daemon.segments()) == 1, "no new segment"
    wait_for(daemon, saver.last_job.job_id)


def test_the_warm_up_never_starts_a_daemon_and_can_be_switched_off(comfy_dirs, monkeypatch, tmp_path):
    monkeypatch.setenv("LUNA_DAEMON_SOCKET", str(tmp_path / "nobody.sock"))
    monkeypatch.setenv("LUNA_DAEMON_AUTOSTART", "1")
    assert node.DAEMON_CLIENTS.prewarm(str(tmp_path / "nobody.sock"), 1 << 20) is False
    assert not (tmp_path / "nobody.sock").exists()
    monkeypatch.setenv("LUNA_DAEMON_PREWARM", "0")
    assert node.start_prewarm() is None


def test_daemon_pixels_match_comfyuis_png(daemon, comfy_dirs, reference):
    single = np.load(reference / "single_tensor.npy")
    golden = np.load(reference / "golden_tensor.npy")
    saver, _ = run_node(True, image_1=single, image_2=golden, format_2="png", subdir_1=False, subdir_2=False)
    wait_for(daemon, saver.last_job.job_id)
    out = comfy_dirs.output
    assert (decoded(out / "img_ORIG.png") == decoded(reference / "single_png_00001_.png")).all()
    assert (decoded(out / "img_UPSCALED_0.png") == decoded(reference / "golden_png_00001_.png")).all()
    assert (decoded(out / "img_UPSCALED_1.png") == decoded(reference / "golden_png_00002_.png")).all()


def test_every_execution_saves_the_workflow_as_it_is_then_changed_in_place_or_not(daemon, comfy_dirs):
    # The workflow is packed on every execution, never cached: one dict changed in place between runs
    # (to values Python calls equal: 1, 2, 2.0, True) and a fresh dict each give their own text in the file.
    workflow = {"nodes": [{"id": 7, "widgets_values": [1, "w" * 40_000]}], "version": 0.4}
    prompt = {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}
    runs = [1, 2, 2.0, True, "fresh"]
    for run, seed in enumerate(runs):
        if seed == "fresh":
            workflow = {"nodes": [{"id": 8, "widgets_values": ["v" * 50_000]}]}
            prompt = {"9": {"class_type": "SaveImage", "inputs": {}}}
        else:
            workflow["nodes"][0]["widgets_values"][0] = seed
            prompt["3"]["inputs"]["seed"] = seed
        saver, _ = run_node(
            True, image_1=noise(seed=run), filename=f"run{run}", prompt=prompt, extra_pnginfo={"workflow": workflow}
        )
        assert saver.last_job is not None, "the daemon took it"
        wait_for(daemon, saver.last_job.job_id)
        text = dict(png_text(comfy_dirs.output / "ORIG" / f"run{run}_ORIG.png"))
        assert (text["prompt"], text["workflow"]) == (json.dumps(prompt), json.dumps(workflow)), seed


def test_a_second_run_of_the_same_size_reuses_the_warm_segment(daemon, comfy_dirs):
    first, _ = run_node(True, image_1=noise(2, 64, 64))
    wait_for(daemon, first.last_job.job_id)
    spool_after_first = daemon.segments()
    second, _ = run_node(True, image_1=noise(2, 64, 64, seed=4))
    wait_for(daemon, second.last_job.job_id)
    assert second.last_job.segment == first.last_job.segment
    assert daemon.segments() == spool_after_first == [first.last_job.segment], "no new file in the spool dir"
    assert len(files_under(comfy_dirs.output)) == 4


def test_the_client_reuses_a_released_segment(daemon, tmp_path):
    with daemon.client() as c:
        options = client.JobOptions(output_dir=str(tmp_path), filename="r")
        a = c.submit(options, [client.SlotImages(noise(1, 32, 32))])
        c.wait(a.job_id)
        listing = daemon.segments()
        b = c.submit(options, [client.SlotImages(noise(1, 32, 32))])
        c.wait(b.job_id)
        assert b.segment == a.segment and daemon.segments() == listing
    assert daemon.segments() == [], "a closed client leaves nothing in the spool dir"


# -- falling back -------------------------------------------------------------------------------------------------


def test_no_daemon_running_means_a_local_save(comfy_dirs, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LUNA_DAEMON_SOCKET", str(tmp_path / "no-daemon.sock"))
    saver, result = run_node(True, image_1=noise(2))
    assert "[LunaMultiSaver] Daemon save selected but daemon not available..." in capsys.readouterr().out
    assert saver.last_job is None
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG_0.png", "ORIG/img_ORIG_1.png"]
    assert [i["type"] for i in result["ui"]["images"]] == ["output", "output"]


def test_a_daemon_killed_between_two_runs_means_a_local_save_then_a_restart_is_used(
    daemon, comfy_dirs, capsys, daemon_binary
):
    first, _ = run_node(True, image_1=noise(1))
    wait_for(daemon, first.last_job.job_id)
    daemon.kill()
    capsys.readouterr()

    second, _ = run_node(True, image_1=noise(1, seed=2))
    out = capsys.readouterr().out
    assert "[LunaMultiSaver] Daemon save selected but daemon not available..." in out
    assert second.last_job is None
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png", "ORIG/img_ORIG_00001.png"], "nothing lost or doubled"

    DaemonProcess(daemon_binary, daemon.root).start()  # same socket, spool and state: the stale socket is replaced
    try:
        third, _ = run_node(True, image_1=noise(1, seed=3))
        assert third.last_job is not None, capsys.readouterr().out
        wait_for(daemon, third.last_job.job_id)
    finally:
        node.DAEMON_CLIENTS.close()
        with daemon.client() as c:
            c.stop()
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png", "ORIG/img_ORIG_00001.png", "ORIG/img_ORIG_00002.png"]


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {pack!r})
    import numpy as np
    from luna_multi_saver import client
    images = np.random.default_rng(11).random((4, 256, 256, 3), dtype=np.float32)
    c = client.Client.connect({socket!r}, "child")
    accepted = c.submit(client.JobOptions(output_dir={out!r}, filename="child"), [client.SlotImages(images)])
    print(accepted.job_id, accepted.segment, flush=True)
    if {wait!r}:
        sys.stdin.read()  # until SIGKILL
    """
)


def child_images() -> np.ndarray:
    return np.random.default_rng(11).random((4, 256, 256, 3), dtype=np.float32)


@pytest.mark.parametrize("how", ["exits", "is SIGKILLed"])
def test_a_client_that_goes_away_right_after_the_accepted_reply_loses_nothing(daemon, tmp_path, how):
    out = tmp_path / "out"
    script = CHILD.format(pack=str(PACK), socket=daemon.socket, out=str(out), wait=how == "is SIGKILLed")
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    job_id, segment = child.stdout.readline().split()
    if how == "is SIGKILLed":
        child.kill()
    assert child.wait() in (0, -9)
    status = wait_for(daemon, job_id)
    assert [i["state"] for i in status["images"]] == ["written"] * 4
    assert files_under(out) == [f"child_{b}.png" for b in range(4)]
    for b, image in enumerate(child_images()):
        assert (decoded(out / f"child_{b}.png") == to_uint8(image)).all()
    if how == "exits":
        # Whoever was last (the daemon releasing, or the exiting client detaching) unlinked the segment.
        assert segment not in daemon.segments()


# -- both modes give the same result ------------------------------------------------------------------------------

PROMPT = {"3": {"class_type": "KSampler", "inputs": {"seed": 42, "cfg": 7.5}}}
EXTRA = {"workflow": {"nodes": [{"title": 'Ünïcode "q" \\ x'}]}, "luna_extra": {"k": [1, 2]}}


def both_modes(daemon, comfy_dirs, monkeypatch, **inputs) -> tuple[Path, Path]:
    # PNG unless a test says otherwise, like run_node; some executions gate images out: discarded is settled too.
    settled = ("written", "discarded")
    inputs = {"format_1": "png", **inputs}
    return helpers.same_files_in_both_modes(daemon, comfy_dirs, monkeypatch, settled, **inputs)


def same_pixels(a: Path, b: Path) -> None:
    assert (decoded(a) == decoded(b)).all(), (a, b)


def test_png_with_plain_names_gives_the_same_files_and_pixels(daemon, comfy_dirs, monkeypatch):
    local, remote = both_modes(daemon, comfy_dirs, monkeypatch, image_1=noise(2), image_3=noise(), format_3="png")
    for rel in files_under(local):
        same_pixels(local / rel, remote / rel)


def test_parity_templates_and_model_name(daemon, comfy_dirs, monkeypatch):
    inputs = {
        "save_path": "%model_dir%/%date:yyyy-MM-dd%",
        "filename": "%time:YYYY_mm_dd.HH.MM.SS%_%model_name%_%index%",
        "filename_index": 7,
        "model_name": "ignored.ckpt",
        "metadata": {"model_name": "Illustrious/3DCG/foo_v60.safetensors", "seed": 1},
        "image_1": noise(),
    }
    local, _ = both_modes(daemon, comfy_dirs, monkeypatch, **inputs)
    assert files_under(local) == ["Illustrious/3DCG/2025-03-07/ORIG/2025_03_07.09.05.04_foo_v60_7_ORIG.png"]


def test_parity_png_metadata(daemon, comfy_dirs, monkeypatch):
    inputs = {"image_1": noise(2), "prompt": PROMPT, "extra_pnginfo": EXTRA, "custom_metadata": "note, ✓"}
    local, remote = both_modes(daemon, comfy_dirs, monkeypatch, **inputs)
    for rel in files_under(local):
        assert png_text(local / rel) == png_text(remote / rel)
        same_pixels(local / rel, remote / rel)


def test_parity_metadata_msgpack_cannot_carry_falls_back_to_text(daemon, comfy_dirs, monkeypatch):
    # A 70-bit integer does not fit MessagePack: the node sends json.dumps text instead, same files.
    prompt = {"3": {"inputs": {"seed": 2**70, "cfg": 1e-05, "text": "ünï \ud83d"}}}
    local, remote = both_modes(daemon, comfy_dirs, monkeypatch, image_1=noise(), prompt=prompt)
    for rel in files_under(local):
        assert png_text(local / rel) == png_text(remote / rel)
        assert dict(png_text(remote / rel))["prompt"] == json.dumps(prompt)


def test_parity_generation_metadata(daemon, comfy_dirs, monkeypatch):
    inputs = {"image_1": noise(), "prompt": PROMPT, "metadata": {"seed": 42, "cfg": 7.5, "hires": True}}
    local, remote = both_modes(daemon, comfy_dirs, monkeypatch, **inputs)
    for rel in files_under(local):
        assert png_text(local / rel) == png_text(remote / rel)


def test_parity_webp_lossless_and_lossy(daemon, comfy_dirs, monkeypatch):
    inputs = {
        "image_1": noise(2),
        "format_1": "webp",
        "image_2": noise(),
        "format_2": "webp",
        "prompt": PROMPT,
        "extra_pnginfo": EXTRA,
    }
    for lossless in (True, False):
        monkeypatch.setattr(folder_paths, "output_directory", str(comfy_dirs.output))
        sub = comfy_dirs.output / str(lossless)
        sub.mkdir()
        monkeypatch.setattr(comfy_dirs, "output", sub)
        local, remote = both_modes(daemon, comfy_dirs, monkeypatch, lossless_webp=lossless, **inputs)
        for rel in files_under(local):
            assert comfy_frontend_exif(webp_exif(local / rel)) == comfy_frontend_exif(webp_exif(remote / rel))
            assert comfy_frontend_exif(webp_exif(remote / rel))["workflow"] == json.dumps(EXTRA["workflow"])
            assert user_comment(local / rel) == user_comment(remote / rel)
            # Both put EXIF right after VP8X, before the image data (what ComfyUI's frontend 1.27 can find).
            kinds = [[kind for kind, _ in webp_chunks(root / rel)][:2] for root in (local, remote)]
            assert kinds == [[b"VP8X", b"EXIF"]] * 2, rel
            if lossless:
                same_pixels(local / rel, remote / rel)


def test_parity_jpeg_with_oversized_metadata(daemon, comfy_dirs, monkeypatch):
    inputs = {
        "image_1": noise(),
        "format_1": "jpeg",
        "prompt": {"text": "p" * 40_000},
        "extra_pnginfo": {"workflow": {"text": "w" * 40_000}},
    }
    local, remote = both_modes(daemon, comfy_dirs, monkeypatch, **inputs)
    for rel in files_under(local):
        assert comfy_frontend_exif(jpeg_exif(local / rel)) == comfy_frontend_exif(jpeg_exif(remote / rel))
        assert "prompt" not in comfy_frontend_exif(jpeg_exif(remote / rel))


def test_parity_quality_gates_and_discards(daemon, comfy_dirs, monkeypatch):
    flat = np.full((1, 32, 32, 3), 0.5, dtype=np.float32)
    batch = np.concatenate([noise(1, 32, 32), flat])
    inputs = {"image_1": batch, "quality_gate": "both", "save_path": "g"}
    local, _ = both_modes(daemon, comfy_dirs, monkeypatch, **inputs)
    assert files_under(local) == ["g/ORIG/img_ORIG_0.png", "g/_discarded/ORIG/img_ORIG_1.png"]


def test_parity_name_collisions_get_the_same_counters(daemon, comfy_dirs, monkeypatch):
    inputs = {"image_1": noise(), "image_2": noise(), "affix_2": "ORIG", "format_2": "png"}
    local, _ = both_modes(daemon, comfy_dirs, monkeypatch, **inputs)
    assert files_under(local) == ["ORIG/img_ORIG.png", "ORIG/img_ORIG_00001.png"]

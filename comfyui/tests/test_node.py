"""The node as ComfyUI calls it: the UI result, the message texts, one timestamp per execution, ComfyUI's
--disable-metadata, and the fallback to a local save whenever the daemon cannot take the job (scripted with a
fake daemon; the real one is in test_daemon.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import helpers
from conftest import cli_args
from helpers import FakeDaemon, FakeTensor, decoded, error, files_under, noise, png_text, send
from luna_multi_saver import node, templates
from luna_multi_saver.node import LunaMultiSaver
from luna_multi_saver.pixels import to_uint8

WHEN = templates.Timestamp(ms=1_741_334_704_000, utc_offset_s=0)


@pytest.fixture(autouse=True)
def fixed_time(monkeypatch):
    calls = []

    def now(cls):
        calls.append(1)
        return WHEN

    monkeypatch.setattr(templates.Timestamp, "now", classmethod(now))
    return calls


def run(daemon_save=False, **inputs):
    return helpers.run_node(daemon_save, **inputs)


# -- local mode ---------------------------------------------------------------------------------------------------


def test_local_mode_returns_comfyuis_ui_shape(comfy_dirs):
    images = noise(2)
    _, result = run(image_1=images, format_1="png", image_3=noise(), format_3="webp", subdir_3=False)
    assert result == {
        "ui": {
            "images": [
                {"filename": "img_ORIG_0.png", "subfolder": "ORIG", "type": "output"},
                {"filename": "img_ORIG_1.png", "subfolder": "ORIG", "type": "output"},
                {"filename": "img_DETAILED.webp", "subfolder": "", "type": "output"},
            ]
        }
    }
    assert (decoded(comfy_dirs.output / "ORIG" / "img_ORIG_1.png") == to_uint8(images[1])).all()


def test_defaults_are_the_original_nodes(comfy_dirs):
    saver = LunaMultiSaver()
    saver.save_images(
        save_path="",
        filename="%time:YYYY_mm_dd.HH.MM.SS%_%model_name%",
        daemon_save=False,
        save_mode="parallel",
        quality_gate="disabled",
        min_quality_threshold=0.3,
        image_1=noise(),
    )
    assert files_under(comfy_dirs.output) == ["ORIG/2025_03_07.08.05.04_UnknownModel_ORIG.webp"]


def test_tensors_are_read_without_torch(comfy_dirs):
    images = noise(1)
    run(image_1=FakeTensor(images), format_1="png")
    assert (decoded(comfy_dirs.output / "ORIG" / "img_ORIG.png") == to_uint8(images[0])).all()


def test_no_save_and_missing_inputs_are_skipped(comfy_dirs, capsys):
    _, result = run(image_1=noise(), format_1="no save", image_2=noise(), format_2="png")
    assert [i["filename"] for i in result["ui"]["images"]] == ["img_UPSCALED.png"]
    assert "[LunaMultiSaver] Skipping ORIG - format set to 'no save'" in capsys.readouterr().out


def test_nothing_to_save(comfy_dirs, capsys):
    _, result = run()
    assert result == {"ui": {"images": []}}
    assert "[LunaMultiSaver] No images to save" in capsys.readouterr().out


def test_one_timestamp_per_execution(comfy_dirs, fixed_time):
    run(
        image_1=noise(3),
        image_2=noise(),
        format_1="png",
        filename="%time:HH.MM.SS%",
        save_path="%date:yyyy%",
    )
    assert len(fixed_time) == 1
    assert files_under(comfy_dirs.output) == [
        "2025/ORIG/08.05.04_ORIG_0.png",
        "2025/ORIG/08.05.04_ORIG_1.png",
        "2025/ORIG/08.05.04_ORIG_2.png",
        "2025/UPSCALED/08.05.04_UPSCALED.webp",
    ]


def test_model_name_from_the_metadata_input_wins(comfy_dirs):
    run(image_1=noise(), format_1="png", filename="%model_name%", model_name="old.ckpt", metadata={"model": "a/b.gguf"})
    assert files_under(comfy_dirs.output) == ["ORIG/b_ORIG.png"]


def test_hidden_prompt_and_workflow_are_embedded(comfy_dirs):
    prompt = {"1": {"class_type": "X"}}
    extra = {"workflow": {"nodes": []}}
    run(image_1=noise(), format_1="png", prompt=prompt, extra_pnginfo=extra)
    text = dict(png_text(comfy_dirs.output / "ORIG" / "img_ORIG.png"))
    assert (text["prompt"], text["workflow"]) == (json.dumps(prompt), json.dumps(extra["workflow"]))


def test_comfyuis_disable_metadata_is_honoured(comfy_dirs, monkeypatch):
    monkeypatch.setattr(cli_args.args, "disable_metadata", True)
    run(image_1=noise(), format_1="png", prompt={"1": {}}, extra_pnginfo={"workflow": {}}, custom_metadata="x")
    assert png_text(comfy_dirs.output / "ORIG" / "img_ORIG.png") == []


def test_embed_workflow_off(comfy_dirs):
    run(image_1=noise(), format_1="png", prompt={"1": {}}, embed_workflow=False)
    assert png_text(comfy_dirs.output / "ORIG" / "img_ORIG.png") == []


def test_a_refused_path_is_a_clear_error_and_writes_nothing(comfy_dirs):
    with pytest.raises(ValueError, match=r"save_path component '\.\.' is not allowed"):
        run(image_1=noise(), save_path="../escape")
    assert files_under(comfy_dirs.output.parent) == []


def test_discarded_images_are_reported(comfy_dirs, capsys):
    flat = np.full((1, 8, 8, 3), 0.5, dtype=np.float32)
    _, result = run(image_1=flat, format_1="png", quality_gate="variance")
    assert result["ui"]["images"] == [
        {"filename": "img_ORIG.png", "subfolder": os.path.join("_discarded", "ORIG"), "type": "output"}
    ]
    out = capsys.readouterr().out
    assert "[LunaMultiSaver] Discarded ORIG #0 - quality check failed (variance=0.000, threshold=0.3)" in out


# -- daemon mode against a fake daemon ----------------------------------------------------------------------------


@pytest.fixture
def fake(monkeypatch):
    daemons: list[FakeDaemon] = []

    def make(**kwargs) -> FakeDaemon:
        d = FakeDaemon(**kwargs)
        daemons.append(d)
        monkeypatch.setenv("LUNA_DAEMON_SOCKET", d.socket)
        return d

    yield make
    node.DAEMON_CLIENTS.close()
    for d in daemons:
        d.close()


def test_messages():
    assert node.submitted_message(3, "a1b2c3d4") == "[LunaMultiSaver] Submitted 3 images to daemon (Job ID: a1b2c3d4)"
    assert node.fallback_message("why").startswith("[LunaMultiSaver] Daemon save selected but daemon not available...")
    assert node.fallback_message("why").endswith("why")


def test_daemon_mode_submits_one_job_and_returns_previews(comfy_dirs, fake, capsys):
    def accept(f, conn, job):
        f.take_ownership(job)
        send(conn, {"type": "accepted", "job_id": "a1b2c3d4e5f6", "images": 3})
        return True

    d = fake(on_submit=accept)
    saver, result = run(daemon_save=True, image_1=noise(2, 600, 500), format_1="png", image_2=noise(), format_2="jpeg")
    assert "[LunaMultiSaver] Submitted 3 images to daemon (Job ID: a1b2c3d4e5f6)" in capsys.readouterr().out
    assert saver.last_job.job_id == "a1b2c3d4e5f6"
    submits = [r for r in d.requests if r["type"] == "submit"]
    assert len(submits) == 1, "one job per node execution"
    job = submits[0]
    assert [s["affix"] for s in job["slots"]] == ["ORIG", "UPSCALED"]
    assert [s["format"] for s in job["slots"]] == ["png", "jpeg"]
    assert (job["filename"], job["save_path"], job["timestamp_ms"], job["utc_offset_s"]) == ("img", "", WHEN.ms, 0)
    assert job["output_dir"] == str(comfy_dirs.output)
    assert files_under(comfy_dirs.output) == [], "the daemon saves; the node does not"
    previews = result["ui"]["images"]
    assert [p["type"] for p in previews] == ["temp"] * 3
    node.flush_previews()  # previews are rendered in the background
    assert all((comfy_dirs.temp / p["filename"]).is_file() for p in previews)
    assert max(decoded(comfy_dirs.temp / previews[0]["filename"]).shape[:2]) <= node.PREVIEW_MAX_SIDE


def accept_all(f: FakeDaemon, conn, job: dict) -> bool:
    f.take_ownership(job)
    send(conn, {"type": "accepted", "job_id": f"j{len(f.requests)}", "images": 1})
    return True


def test_raw_templates_go_to_the_daemon(comfy_dirs, fake):
    d = fake(
        on_submit=lambda f, conn, job: (
            f.take_ownership(job) or send(conn, {"type": "accepted", "job_id": "j", "images": 1}) or True
        )
    )
    run(daemon_save=True, image_1=noise(), save_path="%model_dir%", filename="%time:HH%_%index%", model_name="a/b.pt")
    job = d.requests[-1]
    assert (job["save_path"], job["filename"], job["model_name"]) == ("%model_dir%", "%time:HH%_%index%", "a/b.pt")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (error(12, "busy", "queue budget full"), "queue budget full [busy]"),
        (error(13, "shutting_down", "the daemon is shutting down"), "shutting_down"),
    ],
)
def test_a_refusing_daemon_means_a_local_save(comfy_dirs, fake, capsys, reply, reason):
    fake(on_submit=lambda _f, conn, _job: send(conn, reply) or True)
    saver, result = run(daemon_save=True, image_1=noise(2), format_1="png")
    out = capsys.readouterr().out
    assert "[LunaMultiSaver] Daemon save selected but daemon not available..." in out and reason in out
    assert saver.last_job is None
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG_0.png", "ORIG/img_ORIG_1.png"]
    assert [i["type"] for i in result["ui"]["images"]] == ["output", "output"]


def test_an_invalid_job_the_local_save_refuses_too_fails_once_with_the_daemons_reason(comfy_dirs, fake, capsys):
    reason = "filename 'a:b_ORIG' is not allowed: ':' (drive letters, alternate streams) is not allowed"
    fake(on_submit=lambda _f, conn, _job: send(conn, error(10, "invalid_job", reason)) or True)
    with pytest.raises(node.JobRefused, match=r"^the daemon refused the job: filename 'a:b_ORIG' is not allowed"):
        run(daemon_save=True, image_1=noise(), format_1="png", filename="a:b")
    assert "not available" not in capsys.readouterr().out
    assert files_under(comfy_dirs.output) == [], "no local retry of the same invalid job"


def test_an_invalid_job_the_local_save_accepts_is_saved_locally_saying_the_daemon_refused_it(comfy_dirs, fake, capsys):
    fake(on_submit=lambda _f, conn, _job: send(conn, error(10, "invalid_job", "a stricter daemon's limit")) or True)
    saver, result = run(daemon_save=True, image_1=noise(), format_1="png")
    out = capsys.readouterr().out
    assert "[LunaMultiSaver] the daemon refused the job: a stricter daemon's limit; saving locally instead" in out
    assert "not available" not in out and saver.last_job is None
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png"]
    assert [i["type"] for i in result["ui"]["images"]] == ["output"]


def test_every_input_default_is_declared_once_in_input_types():
    defaults = node.input_defaults()
    spec = LunaMultiSaver.INPUT_TYPES()
    declared = {**spec["required"], **spec["optional"]}
    assert defaults == {k: v[1]["default"] for k, v in declared.items() if "default" in v[1]}
    assert defaults["affix_5"] == "IMAGE5" and defaults["format_3"] == "webp" and defaults["autostart_daemon"] is True
    assert set(declared) - set(defaults) == {f"image_{i}" for i in range(1, 6)} | {"metadata"}


def test_no_daemon_means_a_local_save(comfy_dirs, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LUNA_DAEMON_SOCKET", str(tmp_path / "nobody.sock"))
    run(daemon_save=True, image_1=noise(), format_1="png")
    out = capsys.readouterr().out
    assert "[LunaMultiSaver] Daemon save selected but daemon not available..." in out and "is it running" in out
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png"]


def test_a_daemon_dying_mid_submit_means_exactly_one_local_save(comfy_dirs, fake, capsys):
    fake(on_submit=lambda *_: False)
    run(daemon_save=True, image_1=noise(), format_1="png")
    assert "Daemon save selected but daemon not available" in capsys.readouterr().out
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png"]


def test_a_daemon_that_took_the_job_and_died_is_still_saved_locally_with_a_warning(comfy_dirs, fake, capsys):
    fake(on_submit=lambda f, _conn, job: f.take_ownership(job) or False)
    run(daemon_save=True, image_1=noise(), format_1="png")
    assert "may save these images too" in capsys.readouterr().out
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png"]


def test_a_version_mismatch_falls_back_with_a_clear_reason(comfy_dirs, fake, capsys):
    reply = error(3, "version_mismatch", "client speaks protocol version 1, this daemon speaks version 2")
    fake(on_hello=lambda _m: {**reply, "supported_versions": [2]})
    run(daemon_save=True, image_1=noise(), format_1="png")
    out = capsys.readouterr().out
    assert "Daemon save selected but daemon not available" in out and "protocol version mismatch" in out
    assert files_under(comfy_dirs.output) == ["ORIG/img_ORIG.png"]


def test_the_connection_and_segment_stay_warm_across_executions(comfy_dirs, fake):
    d = fake(on_submit=accept_all)
    run(daemon_save=True, image_1=noise(), format_1="png")
    for name in os.listdir(d.spool):  # the fake "finishes" the job: hands the segment back
        fd = os.open(d.spool / name, os.O_RDWR)
        os.pwrite(fd, b"\0", 12)
        os.close(fd)
    run(daemon_save=True, image_1=noise(seed=5), format_1="png")
    assert [r["type"] for r in d.requests] == ["hello", "submit", "submit"]
    segments = {r["slots"][0]["images"][0]["segment"] for r in d.requests if r["type"] == "submit"}
    assert len(segments) == 1 and len(os.listdir(d.spool)) == 1

"""The local save's thumbnails and ZIP archive (local_extras) give the daemon's result: the same thumbnail names,
sizes, format and metadata reference, the same archive entries, the same never-overwrite and always-valid
rules. Parity runs the node both ways against the real daemon; the crash tests kill a real child process at
the archive's checkpoints (no sleeps)."""

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
from conftest import PACK
from helpers import comfy_frontend_exif, decoded, files_under, flat, noise, smooth, user_comment, webp_exif
from luna_multi_saver import local_extras, paths, templates

WHEN = templates.Timestamp(ms=1_741_334_704_000, utc_offset_s=3600)
PROMPT = {"3": {"class_type": "KSampler", "inputs": {"seed": 42}}}
EXTRA = {"workflow": {"nodes": [{"title": "wf"}]}}


@pytest.fixture(autouse=True)
def fixed_time(monkeypatch):
    monkeypatch.setattr(templates.Timestamp, "now", classmethod(lambda cls: WHEN))


def both_modes(daemon, comfy_dirs, monkeypatch, **inputs) -> tuple[Path, Path, dict]:
    """The node's execution saved locally into ``local/`` and by the daemon into ``daemon/``, its archive settled."""
    local_root, daemon_root, status = helpers.save_in_both_modes(daemon, comfy_dirs, monkeypatch, **inputs)
    if inputs.get("zip_archive"):
        with daemon.client("test-waiter") as c:
            while c.batch_status(inputs["batch_name"])["archive_pending"]:  # polled, as the client's wait does
                time.sleep(0.01)
    return local_root, daemon_root, status


def thumbnails_of(root: Path) -> list[str]:
    return [f for f in files_under(root) if "/_thumbnails/" in f or f.startswith("_thumbnails/")]


# -- thumbnails ------------------------------------------------------------------------------------------------------


def test_thumbnail_dims_are_the_daemons_including_its_rounding():
    # src/encode/thumbnail.rs thumbnails_fit_the_square_keep_the_aspect_and_never_grow, plus a half: 5 * 256/512
    # = 2.5 rounds to 3 as Rust's f64::round does (Python's round would give 2).
    assert local_extras.thumbnail_dims(1024, 1024, 256) == (256, 256)
    assert local_extras.thumbnail_dims(1024, 512, 256) == (256, 128)
    assert local_extras.thumbnail_dims(600, 1200, 256) == (128, 256)
    assert local_extras.thumbnail_dims(100, 50, 256) == (100, 50)
    assert local_extras.thumbnail_dims(10_000, 3, 64) == (64, 1)
    assert local_extras.thumbnail_dims(512, 5, 256) == (256, 3)


def test_local_thumbnails_equal_the_daemons_names_sizes_format_and_metadata(daemon, comfy_dirs, monkeypatch):
    inputs = {
        "image_1": smooth(2, 300, 200),  # smooth: the pixels of the two thumbnails can be compared
        "format_1": "png",
        "image_2": noise(1, 5, 512, channels=4),  # RGBA, and the rounding half
        "format_2": "webp",
        "image_3": noise(1, 40, 30),  # smaller than the size: never enlarged
        "format_3": "jpeg",
        "thumbnails": True,
        "thumbnail_size": 256,
        "prompt": PROMPT,
        "extra_pnginfo": EXTRA,
    }
    local, remote, status = both_modes(daemon, comfy_dirs, monkeypatch, **inputs)
    assert files_under(local) == files_under(remote)
    thumbs = thumbnails_of(local)
    assert thumbs == [
        "DETAILED/_thumbnails/img_DETAILED.jpg.webp",
        "ORIG/_thumbnails/img_ORIG_0.png.webp",
        "ORIG/_thumbnails/img_ORIG_1.png.webp",
        "UPSCALED/_thumbnails/img_UPSCALED.webp.webp",
    ]
    assert sorted(Path(i["thumbnail"]).relative_to(remote).as_posix() for i in status["images"]) == thumbs
    for rel in thumbs:
        a, b = Image.open(local / rel), Image.open(remote / rel)
        assert (a.format, a.size, a.mode) == (b.format, b.size, b.mode) == ("WEBP", b.size, b.mode), rel
        meta_a, meta_b = comfy_frontend_exif(webp_exif(local / rel)), comfy_frontend_exif(webp_exif(remote / rel))
        assert meta_a == meta_b == {"source": rel.replace("/_thumbnails", "").removesuffix(".webp")}, rel
        assert user_comment(local / rel) == user_comment(remote / rel)
        assert "Image Type:" in user_comment(local / rel)
        data = (local / rel).read_bytes()
        assert b"workflow" not in data and b"prompt" not in data and b"KSampler" not in data, rel
        if rel.startswith("ORIG/"):
            # Area averages of the same pixels, lossy at quality 80: close, not equal (two resamplers, two libwebp
            # versions). Noise is not compared: there the resamplers' pixel grids differ visibly.
            diff = np.abs(decoded(local / rel).astype(int) - decoded(remote / rel).astype(int)).mean()
            assert diff < 3, (rel, diff)
    assert Image.open(local / "UPSCALED/_thumbnails/img_UPSCALED.webp.webp").size == (256, 3)
    assert Image.open(local / "UPSCALED/_thumbnails/img_UPSCALED.webp.webp").mode == "RGBA", "alpha kept"
    assert Image.open(local / "DETAILED/_thumbnails/img_DETAILED.jpg.webp").size == (30, 40), "never enlarged"


def test_a_discarded_images_thumbnail_and_no_metadata_match_the_daemons(daemon, comfy_dirs, monkeypatch):
    inputs = {
        "image_1": flat(),
        "format_1": "png",
        "quality_gate": "variance",
        "thumbnails": True,
        "thumbnail_size": 16,
        "embed_workflow": False,
    }
    local, remote, _ = both_modes(daemon, comfy_dirs, monkeypatch, **inputs)
    assert (
        files_under(local)
        == files_under(remote)
        == [
            "_discarded/ORIG/_thumbnails/img_ORIG.png.webp",
            "_discarded/ORIG/img_ORIG.png",
        ]
    )
    for root in (local, remote):
        with Image.open(root / "_discarded/ORIG/_thumbnails/img_ORIG.png.webp") as t:
            assert t.size == (16, 12) and not t.getexif(), "no metadata with embed_workflow off"


def test_a_thumbnail_that_cannot_be_written_is_a_note_and_the_image_stays(comfy_dirs):
    (comfy_dirs.output / "ORIG").mkdir()
    (comfy_dirs.output / "ORIG" / "_thumbnails").write_text("a file where the folder would go")
    saver, result = helpers.run_node(False, image_1=noise(), format_1="png", thumbnails=True)
    (image,) = saver.last_saved
    assert Path(image.path).is_file() and image.thumbnail is None
    (note,) = image.notes
    assert note.startswith("thumbnail not written: save_path 'ORIG/_thumbnails' is not allowed"), note
    assert result["ui"]["images"] == [{"filename": "img_ORIG.png", "subfolder": "ORIG", "type": "output"}]


@pytest.mark.parametrize("size", [15, 1025])
def test_a_thumbnail_size_the_daemon_refuses_is_refused_locally_with_its_words_writing_nothing(comfy_dirs, size):
    with pytest.raises(ValueError, match=rf"^thumbnail_size {size} is outside 16\.\.=1024$"):
        helpers.run_node(False, image_1=noise(), format_1="png", thumbnails=True, thumbnail_size=size)
    assert files_under(comfy_dirs.output) == []


def test_the_daemon_and_the_local_save_refuse_a_bad_thumbnail_size_alike(daemon, comfy_dirs, capsys):
    from luna_multi_saver.node import JobRefused

    with pytest.raises(JobRefused, match=r"^the daemon refused the job: thumbnail_size 2000 is outside 16\.\.=1024$"):
        helpers.run_node(True, image_1=noise(), format_1="png", thumbnails=True, thumbnail_size=2000)
    assert files_under(comfy_dirs.output) == [] and "saving locally" not in capsys.readouterr().out


def test_the_local_node_previews_the_full_files(comfy_dirs):
    saver, result = helpers.run_node(False, image_1=noise(), format_1="png", thumbnails=True, thumbnail_size=16)
    # ComfyUI keeps one output per node for the preview and the history: the full file (the thumbnail is beside).
    assert result["ui"]["images"] == [{"filename": "img_ORIG.png", "subfolder": "ORIG", "type": "output"}]
    assert saver.last_saved[0].thumbnail == str(comfy_dirs.output / "ORIG/_thumbnails/img_ORIG.png.webp")


# -- the ZIP archive ---------------------------------------------------------------------------------------------


def entries(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist()), "stored, as the daemon's"
        return sorted(z.namelist())


def test_local_archive_entries_equal_the_daemons(daemon, comfy_dirs, monkeypatch):
    inputs = {
        "image_1": noise(2, 16, 16),
        "format_1": "png",
        "image_2": flat(1, 16, 16),
        "format_2": "webp",
        "quality_gate": "variance",  # the flat one is discarded: not archived
        "thumbnails": True,  # thumbnails are not archived
        "batch_name": "night",
        "zip_archive": True,
    }
    local, remote, _ = both_modes(daemon, comfy_dirs, monkeypatch, **inputs)
    expected = ["ORIG/img_ORIG_0.png", "ORIG/img_ORIG_1.png"]
    assert entries(local / "night.zip") == entries(remote / "night.zip") == expected
    with zipfile.ZipFile(local / "night.zip") as z:
        assert z.comment == b"luna-multi-saver local batch night"
        assert z.read("ORIG/img_ORIG_0.png") == (local / "ORIG/img_ORIG_0.png").read_bytes()


def test_executions_of_a_batch_land_in_one_local_archive_each_image_once(comfy_dirs, capsys):
    for n in (1, 2):
        helpers.run_node(False, image_1=noise(n, 16, 16, seed=n), format_1="png", batch_name="eve", zip_archive=True)
    names = [f for f in files_under(comfy_dirs.output) if f.endswith(".png")]
    assert len(names) == 3 and entries(comfy_dirs.output / "eve.zip") == names
    out = capsys.readouterr().out
    assert f"[LunaMultiSaver] Batch eve: 1 image(s) added to {comfy_dirs.output / 'eve.zip'}" in out
    assert f"[LunaMultiSaver] Batch eve: 2 image(s) added to {comfy_dirs.output / 'eve.zip'}" in out
    # The same files again (a repeat): nothing is added twice.
    root = str(comfy_dirs.output)
    assert local_extras.update_archive(root, "eve", [str(comfy_dirs.output / n) for n in names])[1] == 0
    assert entries(comfy_dirs.output / "eve.zip") == names


def test_an_existing_file_or_the_daemons_archive_is_never_overwritten(comfy_dirs):
    out = comfy_dirs.output
    (out / "b.zip").write_bytes(b"not a zip, someone's file")
    with zipfile.ZipFile(out / "b_00001.zip", "w") as z:  # the daemon's archive of the batch: the daemon's alone
        z.writestr("x.png", b"x")
        z.comment = b"luna-daemon batch b 0123456789ab"
    daemons = (out / "b_00001.zip").read_bytes()
    helpers.run_node(False, image_1=noise(1, 16, 16), format_1="png", batch_name="b", zip_archive=True)
    assert (out / "b.zip").read_bytes() == b"not a zip, someone's file"
    assert (out / "b_00001.zip").read_bytes() == daemons
    assert entries(out / "b_00002.zip") == ["ORIG/img_ORIG.png"]
    helpers.run_node(False, image_1=noise(1, 16, 16, seed=2), format_1="png", batch_name="b", zip_archive=True)
    assert entries(out / "b_00002.zip") == ["ORIG/img_ORIG.png", "ORIG/img_ORIG_00001.png"], "its own: adopted"
    assert not (out / "b_00003.zip").exists()


def test_a_bad_batch_name_or_a_failing_update_is_logged_and_loses_no_image(comfy_dirs, tmp_path):
    image = comfy_dirs.output / "a.png"
    image.write_bytes(b"png")
    with pytest.raises(paths.PathRefused, match=r"batch_name '\.\./x' is not allowed: it contains a path separator"):
        local_extras.update_archive(str(comfy_dirs.output), "../x", [str(image)])
    for bad in ("a b", "-x", "x" * 101):
        with pytest.raises(paths.PathRefused, match=r"is not allowed: a batch name is 1 to 100 of A-Z a-z 0-9 _ - \."):
            local_extras.update_archive(str(comfy_dirs.output), bad, [str(image)])
    with pytest.raises(paths.PathRefused, match="'con' is not allowed: it is a reserved device name on Windows"):
        local_extras.update_archive(str(comfy_dirs.output), "con", [str(image)])
    assert os.listdir(comfy_dirs.output) == ["a.png"], "nothing written for a refused name"
    lines = []

    class Options:
        zip, batch, output_dir = True, "../x", str(comfy_dirs.output)

    class Saved:
        path, discarded = str(image), False

    line = local_extras.after_job(Options, [Saved], log=lines.append)
    assert lines == [line] and line.startswith("[LunaMultiSaver] Batch ../x: archive not updated (PathRefused: ")
    assert line.endswith("; images saved") and image.read_bytes() == b"png"


def test_an_image_that_cannot_be_read_is_skipped_and_logged_not_kept_pending(tmp_path, capsys):
    root = tmp_path / "out"
    (root / "gone.png").mkdir(parents=True)  # a folder where the image was: unreadable as a file
    (root / "b.png").write_bytes(b"b")
    path, added = local_extras.update_archive(str(root), "skip", [str(root / "gone.png"), str(root / "b.png")])
    assert added == 1 and entries(Path(path)) == ["b.png"]
    assert f"[LunaMultiSaver] {root / 'gone.png'} is not added to the archive: " in capsys.readouterr().out
    assert not Path(local_extras.pending_path(str(root), "skip")).exists(), "it does not block later updates"


CHILD = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from luna_multi_saver import local_extras
    point = sys.argv[2]
    local_extras._checkpoint = lambda p: os._exit(9) if p == point else None
    local_extras.update_archive(sys.argv[3], "crash", sys.argv[4:])
    """
)


@pytest.mark.parametrize("point", ["archive.writing", "archive.before_rename", "archive.after_rename"])
def test_an_update_killed_at_any_point_leaves_a_complete_archive_and_the_next_adds_its_images_once(tmp_path, point):
    root = tmp_path / "out"
    root.mkdir()
    files = []
    for n in range(4):
        files.append(root / f"img_{n}.png")
        files[-1].write_bytes(os.urandom(4096))
    local_extras.update_archive(str(root), "crash", [str(files[0])])
    before = (root / "crash.zip").read_bytes()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(PACK), point, str(root), *map(str, files[1:3])], check=False
    )
    assert child.returncode == 9, "killed at the checkpoint"
    if point == "archive.after_rename":
        assert entries(root / "crash.zip") == ["img_0.png", "img_1.png", "img_2.png"]
    else:
        assert (root / "crash.zip").read_bytes() == before, "the old complete archive, untouched"
        assert entries(root / "crash.zip") == ["img_0.png"]
    temps = [n for n in os.listdir(root) if n.startswith(paths.TEMP_PREFIX) and n.endswith(paths.TEMP_SUFFIX)]
    assert len(temps) == (0 if point == "archive.after_rename" else 1), "at most the temp file"
    pending = Path(local_extras.pending_path(str(root), "crash"))
    assert json.loads(pending.read_text()) == [str(files[1]), str(files[2])], "the killed update's images, listed"
    # The next execution's update (another image) also adds what the killed one did not: each image once.
    path, added = local_extras.update_archive(str(root), "crash", [str(files[3])])
    assert added == (1 if point == "archive.after_rename" else 3)
    assert entries(Path(path)) == ["img_0.png", "img_1.png", "img_2.png", "img_3.png"]
    assert not pending.exists(), "nothing pending once the archive holds it"


def test_a_first_archive_killed_before_its_rename_leaves_no_archive(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    (root / "a.png").write_bytes(b"a")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(PACK), "archive.before_rename", str(root), str(root / "a.png")], check=False
    )
    assert child.returncode == 9
    assert not (root / "crash.zip").exists(), "never a partial archive under the name"
    assert [n for n in os.listdir(root) if n.endswith(paths.TEMP_SUFFIX)] != [], "only the abandoned temp file"
    assert local_extras.update_archive(str(root), "crash", [])[1] == 1, "the next update archives it"
    assert entries(root / "crash.zip") == ["a.png"]

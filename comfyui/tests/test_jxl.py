"""Issue 15's JPEG XL in both modes: lossless, so the local save (pillow-jxl-plugin) and the daemon (zune-jpegxl)
decode to exactly the same 8-bit samples; the prompt and workflow sit in an ``Exif`` box with the same tags and
values, read back with a parser of our own and with Pillow. Where the local save cannot write JPEG XL (no plugin,
or 16 bits) it writes a PNG and says so: never a lost image."""

from __future__ import annotations

import json

import numpy as np
import pytest

import helpers
from helpers import comfy_frontend_exif, files_under, jxl_boxes, jxl_exif, noise, read_png16
from luna_multi_saver import jxl, templates
from luna_multi_saver.pixels import to_uint8, to_uint16

pytest.importorskip("pillow_jxl")
from PIL import Image

WHEN = templates.Timestamp(ms=1_741_334_704_000, utc_offset_s=0)
PROMPT = {"3": {"class_type": "KSampler", "inputs": {"seed": 42}}}
EXTRA = {"workflow": {"nodes": [{"id": 1}], "extra": {"note": "ü 日本"}}}


@pytest.fixture(autouse=True)
def fixed_time(monkeypatch):
    monkeypatch.setattr(templates.Timestamp, "now", classmethod(lambda cls: WHEN))


def fine(h: int = 24, w: int = 40, c: int = 3) -> np.ndarray:
    """Floats 8 bits cannot tell apart, with values outside 0..1 and a NaN."""
    x = np.random.default_rng(5).random((1, h, w, c), dtype=np.float32)
    x[0, 0, 0, 0], x[0, 0, 1, 0], x[0, 1, 0, 0] = 1.5, -0.25, np.nan
    return x


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "JXL"
        return np.asarray(im)


def expected_tags() -> dict[str, str]:
    return {"prompt": json.dumps(PROMPT), "workflow": json.dumps(EXTRA["workflow"])}


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_local_jxl_is_lossless_and_carries_the_workflow(comfy_dirs, channels):
    images = fine(c=channels)
    helpers.run_node(False, image_1=images, format_1="jxl", prompt=PROMPT, extra_pnginfo=EXTRA)
    (rel,) = files_under(comfy_dirs.output)
    assert rel.endswith(".jxl")
    got = pixels(comfy_dirs.output / rel)
    want = to_uint8(images[0])
    assert (got.reshape(want.shape) == want).all()
    tags = comfy_frontend_exif(jxl_exif(comfy_dirs.output / rel))
    assert {k: tags[k] for k in ("prompt", "workflow")} == expected_tags()
    with Image.open(comfy_dirs.output / rel) as im:
        assert im.getexif()[0x0110] == "prompt:" + json.dumps(PROMPT)


def test_local_jxl_without_the_plugin_is_a_png_with_a_note(comfy_dirs, monkeypatch, capsys):
    monkeypatch.setattr(jxl, "available", lambda: False)
    saver, result = helpers.run_node(False, image_1=noise(), format_1="jxl", prompt=PROMPT)
    (rel,) = files_under(comfy_dirs.output)
    assert rel.endswith(".png") and result["ui"]["images"][0]["filename"].endswith(".png")
    assert saver.last_saved[0].notes == [jxl.MISSING_NOTE]
    assert jxl.MISSING_NOTE in capsys.readouterr().out
    assert (helpers.decoded(comfy_dirs.output / rel) == to_uint8(noise()[0])).all()
    assert helpers.png_text(comfy_dirs.output / rel)[0] == ("prompt", json.dumps(PROMPT))


def test_local_16_bit_jxl_is_a_16_bit_png_with_a_note(comfy_dirs, capsys):
    images = fine()
    saver, _ = helpers.run_node(False, image_1=images, format_1="jxl", jxl_bit_depth="16-bit")
    (rel,) = files_under(comfy_dirs.output)
    assert rel.endswith(".png")
    assert saver.last_saved[0].notes == [jxl.SIXTEEN_BIT_NOTE]
    assert jxl.SIXTEEN_BIT_NOTE in capsys.readouterr().out
    assert (read_png16(comfy_dirs.output / rel) == to_uint16(images[0])).all()


def test_a_bad_jxl_bit_depth_is_refused_locally_with_the_reason():
    from luna_multi_saver import local_save

    options = local_save.SaveOptions(output_dir="/tmp", jxl_bit_depth=10)
    slot = local_save.Slot(images=noise(), affix="", format="jxl", subdir=False)
    with pytest.raises(ValueError, match=r"jxl_bit_depth 10 is not 8 or 16 \(JPEG XL is saved losslessly"):
        local_save.LocalSaver(options).plan([slot])


def test_parity_jxl_same_samples_and_metadata(daemon, comfy_dirs, monkeypatch):
    # Two images wider than one 256-pixel group, with alpha.
    inputs = {"image_1": noise(2, 20, 300, 4), "format_1": "jxl", "prompt": PROMPT, "extra_pnginfo": EXTRA}
    local, remote = helpers.same_files_in_both_modes(daemon, comfy_dirs, monkeypatch, **inputs)
    assert len(files_under(local)) == 2
    for rel in files_under(local):
        assert rel.endswith(".jxl")
        assert (pixels(local / rel) == pixels(remote / rel)).all(), rel
        ours, theirs = jxl_exif(local / rel), jxl_exif(remote / rel)
        assert comfy_frontend_exif(ours) == comfy_frontend_exif(theirs)
        assert {k: comfy_frontend_exif(theirs)[k] for k in ("prompt", "workflow")} == expected_tags()
        assert helpers.user_comment(local / rel) == helpers.user_comment(remote / rel)
        # The daemon's layout: the Exif box before the codestream.
        assert [k for k, _ in jxl_boxes(remote / rel)] == [b"JXL ", b"ftyp", b"Exif", b"jxlc"]


def test_daemon_refuses_a_one_pixel_wide_jxl_and_the_node_saves_it_locally(daemon, comfy_dirs, capsys):
    image = noise(1, 9, 1, 3)
    helpers.run_node(True, image_1=image, format_1="jxl")
    out = capsys.readouterr().out
    assert "JPEG XL needs at least 2x2 pixels, the image is 1x9" in out and "saving locally instead" in out, out
    (rel,) = files_under(comfy_dirs.output)
    assert rel.endswith(".jxl")
    assert (pixels(comfy_dirs.output / rel).reshape(9, 1, 3) == to_uint8(image[0])).all()

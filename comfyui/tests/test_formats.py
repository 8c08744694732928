"""Issue 15's formats, 16-bit PNG and EXR, in both modes: the local save writes exactly the samples PROTOCOL.md
10.7 specifies, the daemon's files decode to the same samples (16-bit PNG: equal; EXR: equal, or within 1e-6
relative where the sRGB curve's float power differs by an ulp), the metadata is identical, and a local EXR without
the OpenEXR package becomes a 16-bit PNG with a note, never a lost image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import helpers
from helpers import files_under, noise, png_text, read_png16
from luna_multi_saver import deep_formats, local_save, templates
from luna_multi_saver.pixels import srgb_to_linear, to_uint16

OpenEXR = pytest.importorskip("OpenEXR")

WHEN = templates.Timestamp(ms=1_741_334_704_000, utc_offset_s=0)
PROMPT = {"3": {"class_type": "KSampler", "inputs": {"seed": 42}}}
EXTRA = {"workflow": {"nodes": [{"id": 1}]}}


@pytest.fixture(autouse=True)
def fixed_time(monkeypatch):
    monkeypatch.setattr(templates.Timestamp, "now", classmethod(lambda cls: WHEN))


def fine(h: int = 24, w: int = 40, c: int = 3, seed: int = 3) -> np.ndarray:
    """Floats 8 bits cannot tell apart, with values outside 0..1 and a NaN."""
    x = np.random.default_rng(seed).random((1, h, w, c), dtype=np.float32)
    x[0, 0, 0, 0], x[0, 0, 1, 0], x[0, 1, 0, 0] = 1.5, -0.25, np.nan
    return x


def read_exr(path: Path) -> tuple[dict, dict]:
    f = OpenEXR.File(str(path), separate_channels=True)
    return {k: v.pixels for k, v in f.channels().items()}, f.header()


def test_to_uint16_follows_the_specified_table():
    x = np.array([0.0, 1.0, 0.5, 0.25, 1 / 65535, 2.0, -0.1, np.nan, np.inf, -np.inf], np.float32)
    assert to_uint16(x).tolist() == [0, 65535, 32767, 16383, 1, 65535, 0, 0, 65535, 0]
    assert to_uint16(np.array([0, 1, 255], np.uint8)).tolist() == [0, 257, 65535]


def test_local_16_bit_png_holds_the_float_precision_and_the_metadata(comfy_dirs):
    images = fine(c=4)
    helpers.run_node(False, image_1=images, format_1="png", png_bit_depth="16-bit", prompt=PROMPT, extra_pnginfo=EXTRA)
    (rel,) = files_under(comfy_dirs.output)
    got = read_png16(comfy_dirs.output / rel)
    assert (got == to_uint16(images[0])).all()
    assert len(np.unique(got)) > 256, "made from the floats, not from 8 bits"
    text = png_text(comfy_dirs.output / rel)
    assert text[:2] == [("prompt", json.dumps(PROMPT)), ("workflow", json.dumps(EXTRA["workflow"]))]


@pytest.mark.parametrize(
    ("depth", "space"), [("32-bit float", "linear"), ("32-bit float", "sRGB"), ("16-bit half", "sRGB")]
)
def test_local_exr_stores_what_the_protocol_says(comfy_dirs, depth, space):
    images = fine()
    helpers.run_node(
        False,
        image_1=images,
        format_1="exr",
        exr_bit_depth=depth,
        exr_color_space=space,
        prompt=PROMPT,
        extra_pnginfo=EXTRA,
    )
    (rel,) = files_under(comfy_dirs.output)
    assert rel.endswith(".exr")
    planes, header = read_exr(comfy_dirs.output / rel)
    assert sorted(planes) == ["B", "G", "R"]
    for c, name in enumerate("RGB"):
        want = images[0, :, :, c]
        if space == "sRGB":
            want = srgb_to_linear(want)
        if depth == "16-bit half":
            want = want.astype(np.float16)
        np.testing.assert_array_equal(planes[name], want)
    assert header["prompt"] == json.dumps(PROMPT) and header["workflow"] == json.dumps(EXTRA["workflow"])


def test_local_exr_without_openexr_is_a_16_bit_png_with_a_note(comfy_dirs, monkeypatch, capsys):
    monkeypatch.setattr(deep_formats, "exr_available", lambda: False)
    saver, result = helpers.run_node(False, image_1=fine(), format_1="exr")
    (rel,) = files_under(comfy_dirs.output)
    assert rel.endswith(".png") and result["ui"]["images"][0]["filename"].endswith(".png")
    assert saver.last_saved[0].notes == [local_save.EXR_MISSING_NOTE]
    assert local_save.EXR_MISSING_NOTE in capsys.readouterr().out
    assert (read_png16(comfy_dirs.output / rel) == to_uint16(fine()[0])).all()


def test_parity_16_bit_png(daemon, comfy_dirs, monkeypatch):
    inputs = {"image_1": fine(c=3), "format_1": "png", "png_bit_depth": "16-bit", "prompt": PROMPT}
    local, remote = helpers.same_files_in_both_modes(daemon, comfy_dirs, monkeypatch, **inputs, extra_pnginfo=EXTRA)
    for rel in files_under(local):
        assert (read_png16(local / rel) == read_png16(remote / rel)).all()
        assert png_text(local / rel) == png_text(remote / rel)


@pytest.mark.parametrize("depth", ["32-bit float", "16-bit half"])
def test_parity_exr(daemon, comfy_dirs, monkeypatch, depth):
    inputs = {"image_1": noise(2, 20, 30, 4), "format_1": "exr", "exr_bit_depth": depth, "prompt": PROMPT}
    local, remote = helpers.same_files_in_both_modes(daemon, comfy_dirs, monkeypatch, **inputs, extra_pnginfo=EXTRA)
    for rel in files_under(local):
        (ours, our_header), (theirs, their_header) = read_exr(local / rel), read_exr(remote / rel)
        assert sorted(ours) == sorted(theirs) == ["A", "B", "G", "R"]
        for name in ours:
            assert ours[name].dtype == theirs[name].dtype == (np.float16 if "half" in depth else np.float32)
            # float32: the sRGB curve's power may differ by an ulp between libm and numpy; half: one half step.
            tol = 1e-3 if "half" in depth else 1e-6
            np.testing.assert_allclose(ours[name], theirs[name], rtol=tol, atol=0)
        for key in ("prompt", "workflow", "image_type", "model_name", "batch_index"):
            assert our_header[key] == their_header[key], key

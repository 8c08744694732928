"""Issue 15's AVIF in both modes: the daemon's and the local save's files carry the same Exif item, byte for byte,
where the ComfyUI frontend reads the workflow back (checked with a port of its reader, ``getFromAvifFile`` of
frontend 1.27.10); decoded pixels agree with the source and with each other within the stated tolerance; a Pillow
without AVIF gives a PNG with a note; bad options are refused in the daemon's words."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import helpers
from helpers import files_under
from luna_multi_saver import avif_format, local_save, templates
from luna_multi_saver.pixels import to_uint8

pytestmark = pytest.mark.skipif(not avif_format.available(), reason="this Pillow has no AVIF")

WHEN = templates.Timestamp(ms=1_741_334_704_000, utc_offset_s=0)
PROMPT = {"3": {"class_type": "KSampler", "inputs": {"text": "a: b", "seed": 42}}}
EXTRA = {"workflow": {"nodes": [{"id": 3}], "links": []}}
# Decoded 8-bit pixels against the source, per sample: mean absolute error and the largest error, for the smooth
# test image at the default quality (80). Measured: daemon (rav1e) mean 0.72-1.17, max 5-14 (8-bit is the worse);
# local (Pillow's libavif) mean 0.70-0.85, max 5-6. Local against daemon: within twice these bounds.
MEAN_TOLERANCE = 2.0
MAX_TOLERANCE = 24


@pytest.fixture(autouse=True)
def fixed_time(monkeypatch):
    monkeypatch.setattr(templates.Timestamp, "now", classmethod(lambda cls: WHEN))


def smooth(b: int = 1, h: int = 48, w: int = 64, c: int = 3) -> np.ndarray:
    """Gradients with a little texture: what lossy codecs are judged on (noise only measures the quantiser)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [x / w, y / h, (x + y) / (w + h), 0.5 + 0.4 * np.sin(x / 5) * np.cos(y / 7)]
    one = np.stack(planes[:c], axis=-1).astype(np.float32)
    return np.stack([np.roll(one, i * 3, axis=1) for i in range(b)])


# -- a port of the ComfyUI frontend's AVIF reader (1.27.10, src/scripts/metadata/avif.ts) ---------------------------


def _find_box(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    at = start
    while at + 8 <= end:
        (size,) = struct.unpack(">I", data[at : at + 4])
        if size == 0:
            break
        if data[at + 4 : at + 8] == kind:
            return at + 8, at + size
        if at + size > end:
            break
        at += size
    return None


def exif_item(data: bytes) -> bytes | None:
    """The bytes of the Exif item's first extent, located exactly as the frontend locates them."""
    assert data[4:12] == b"ftypavif", "the frontend checks for the avif major brand"
    meta = _find_box(data, 0, len(data), b"meta")
    assert meta is not None
    start = meta[0] + 4
    iinf = _find_box(data, start, meta[1], b"iinf")
    version = data[iinf[0]]
    count = struct.unpack(">H" if version == 0 else ">I", data[iinf[0] + 4 : iinf[0] + (6 if version == 0 else 8)])[0]
    at = iinf[0] + (6 if version == 0 else 8)
    exif_id = None
    for _ in range(count):
        (size,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"infe":
            assert data[at + 8] >= 2, "the frontend reads infe version 2 and 3 only"
            item_id = struct.unpack(">H", data[at + 12 : at + 14])[0]
            if data[at + 16 : at + 20] == b"Exif":
                exif_id = item_id
        at += size
    if exif_id is None:
        return None
    iloc = _find_box(data, start, meta[1], b"iloc")
    at = iloc[0]
    version, sizes, base = data[at], data[at + 4], data[at + 5]
    assert (version, sizes, base >> 4) == (0, 0x44, 0), "32-bit offsets and lengths, no base offset"
    (items,) = struct.unpack(">H", data[at + 6 : at + 8])
    at += 8
    for _ in range(items):
        item_id, _ref, extents = struct.unpack(">HHH", data[at : at + 6])
        at += 6
        offset, length = struct.unpack(">II", data[at : at + 8])
        at += 8 * extents
        if item_id == exif_id:
            return data[offset : offset + length]
    return None


def restored(data: bytes) -> dict:
    """What the frontend restores: ``prompt`` and ``workflow`` from IFD0's ``<key>:<json>`` ASCII entries."""
    item = exif_item(data)
    if item is None:
        return {}
    tiff = item[min(i for i in (item.find(b"MM\0*"), item.find(b"II*\0")) if i >= 0) :]
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    (entries,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    out = {}
    for i in range(entries):
        _tag, kind, count, offset = struct.unpack(order + "HHII", tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i])
        if kind == 2:
            key, _, value = tiff[offset : offset + count - 1].decode().partition(":")
            if key.lower() in ("prompt", "workflow"):
                out[key.lower()] = json.loads(value.strip())
    return out


# -- the tests ------------------------------------------------------------------------------------------------------


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA" if im.mode == "RGBA" else "RGB"), dtype=np.int16)


def errors(got: np.ndarray, want: np.ndarray) -> tuple[float, int]:
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    return float(diff.mean()), int(diff.max())


@pytest.mark.parametrize("channels", [3, 4])
def test_local_avif_restores_the_workflow_and_decodes_close_to_the_source(comfy_dirs, channels):
    images = smooth(c=channels)
    saver, result = helpers.run_node(
        False, image_1=images, format_1="avif", avif_bit_depth="8-bit", prompt=PROMPT, extra_pnginfo=EXTRA
    )
    (rel,) = files_under(comfy_dirs.output)
    assert rel.endswith(".avif") and result["ui"]["images"][0]["filename"].endswith(".avif")
    assert saver.last_saved[0].notes == []
    data = (comfy_dirs.output / rel).read_bytes()
    assert restored(data) == {"prompt": PROMPT, "workflow": EXTRA["workflow"]}
    mean, worst = errors(decoded(comfy_dirs.output / rel), to_uint8(images[0]))
    assert mean <= MEAN_TOLERANCE and worst <= MAX_TOLERANCE, f"mean {mean:.2f}, max {worst}"


def test_local_ten_bit_is_written_at_eight_bits_with_a_note(comfy_dirs, capsys):
    saver, _ = helpers.run_node(False, image_1=smooth(), format_1="avif")
    (rel,) = files_under(comfy_dirs.output)
    assert rel.endswith(".avif")
    assert saver.last_saved[0].notes == [avif_format.EIGHT_BIT_NOTE]
    assert avif_format.EIGHT_BIT_NOTE in capsys.readouterr().out


@pytest.mark.parametrize(("depth", "png_bits"), [("10-bit", 16), ("8-bit", 8)])
def test_without_pillow_avif_the_image_is_a_png_with_a_note(comfy_dirs, monkeypatch, capsys, depth, png_bits):
    monkeypatch.setattr(avif_format, "available", lambda: False)
    images = smooth()
    saver, result = helpers.run_node(False, image_1=images, format_1="avif", avif_bit_depth=depth, prompt=PROMPT)
    (rel,) = files_under(comfy_dirs.output)
    assert rel.endswith(".png") and result["ui"]["images"][0]["filename"].endswith(".png")
    assert saver.last_saved[0].notes == [avif_format.MISSING_NOTE]
    assert avif_format.MISSING_NOTE in capsys.readouterr().out
    data = (comfy_dirs.output / rel).read_bytes()
    assert data[24] == png_bits, "IHDR bit depth: 16 keeps a 10-bit request's precision"
    with Image.open(comfy_dirs.output / rel) as im:
        assert im.info["prompt"] == json.dumps(PROMPT)
        if png_bits == 8:
            assert (np.asarray(im) == to_uint8(images[0])).all()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"avif_quality": 0}, "avif_quality 0 is outside 1..=100"),
        ({"avif_speed": 11}, "avif_speed 11 is outside 1..=10"),
    ],
)
def test_bad_options_are_refused_in_the_daemons_words(comfy_dirs, inputs, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        helpers.run_node(False, image_1=smooth(), format_1="avif", **inputs)
    assert files_under(comfy_dirs.output) == []
    with pytest.raises(ValueError, match=r"avif_bit_depth 16 is not 8 or 10"):
        avif_format.check_options(80, 6, 16)


def test_the_exif_item_holds_the_tags_and_values_of_the_webp_exif():
    meta = local_save.metadata.JobMetadata.from_inputs(PROMPT, EXTRA, None, None)
    facts = local_save.metadata.ImageFacts("ORIG", "m", "m", "2025_03_07_080504", 0)
    out = io.BytesIO()
    avif_format.save(out, Image.new("RGB", (8, 8)), 80, 10, avif_format.exif_bytes(meta, facts))
    item = exif_item(out.getvalue())
    assert item[:4] == b"\0\0\0\0"
    ours = Image.Exif()
    ours.load(b"Exif\0\0" + item[4:])
    theirs = local_save.metadata.build_exif(meta, facts)
    ifd0 = {tag: value for tag, value in ours.items() if tag != 0x8769}  # the sub-IFD pointer's offset
    assert ifd0 == dict(theirs) and ours.get_ifd(0x8769) == theirs.get_ifd(0x8769)


@pytest.mark.parametrize(("channels", "depth"), [(3, "8-bit"), (4, "8-bit"), (3, "10-bit")])
def test_parity_same_exif_item_and_pixels_within_tolerance(daemon, comfy_dirs, monkeypatch, channels, depth):
    images = smooth(b=2, c=channels)
    inputs = {"image_1": images, "format_1": "avif", "avif_bit_depth": depth, "prompt": PROMPT}
    local, remote = helpers.same_files_in_both_modes(daemon, comfy_dirs, monkeypatch, **inputs, extra_pnginfo=EXTRA)
    rels = files_under(local)
    assert len(rels) == 2 and all(r.endswith(".avif") for r in rels)
    for b, rel in enumerate(rels):
        ours, theirs = (local / rel).read_bytes(), (remote / rel).read_bytes()
        assert exif_item(ours) == exif_item(theirs), "identical metadata bytes"
        assert restored(theirs) == {"prompt": PROMPT, "workflow": EXTRA["workflow"]}
        source = to_uint8(images[b])
        for name, path in (("local", local / rel), ("daemon", remote / rel)):
            mean, worst = errors(decoded(path), source)
            assert mean <= MEAN_TOLERANCE and worst <= MAX_TOLERANCE, f"{name}: mean {mean:.2f}, max {worst}"
        mean, worst = errors(decoded(local / rel), decoded(remote / rel))
        assert mean <= 2 * MEAN_TOLERANCE and worst <= 2 * MAX_TOLERANCE, f"local vs daemon: mean {mean:.2f}, {worst}"

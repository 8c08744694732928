"""Metadata read back from saved files (SPEC section 4), compared with what ComfyUI itself writes."""

from __future__ import annotations

import json

from PIL import Image

from helpers import (
    comfy_frontend_exif,
    decoded,
    jpeg_exif,
    noise,
    png_chunks,
    png_text,
    reference_json,
    user_comment,
    webp_chunks,
    webp_exif,
)
from luna_multi_saver import metadata
from luna_multi_saver.local_save import SaveOptions, Slot, save_local
from luna_multi_saver.metadata import ImageFacts, JobMetadata
from luna_multi_saver.templates import Timestamp

WHEN = Timestamp(ms=1_741_334_704_000, utc_offset_s=0)
PROMPT = {"3": {"class_type": "KSampler", "inputs": {"seed": 42, "cfg": 7.5}}}
EXTRA = {"workflow": {"nodes": [{"title": 'Ünïcode "q" \\ x'}]}, "luna_extra": {"k": [1, 2]}}


def save(tmp_path, fmt, meta: JobMetadata, **kwargs):
    options = SaveOptions(
        output_dir=str(tmp_path),
        filename="m",
        model_name="Illustrious/3DCG/foo_v60.safetensors",
        timestamp=WHEN,
        metadata=meta,
        **kwargs,
    )
    return save_local(options, [Slot(noise(2), "ORIG", fmt, False)])


def test_json_is_what_comfyui_writes():
    meta = JobMetadata.from_inputs(PROMPT, EXTRA, None, "")
    assert meta.prompt == json.dumps(PROMPT)
    assert meta.extra_pnginfo == [("workflow", json.dumps(EXTRA["workflow"])), ("luna_extra", '{"k": [1, 2]}')]
    assert r"\u00dcn\u00efcode \"q\" \\ x" in meta.extra_pnginfo[0][1]
    assert meta.custom_metadata is None


def test_png_text_order_and_values_with_custom_metadata(tmp_path):
    saved = save(tmp_path, "png", JobMetadata.from_inputs(PROMPT, EXTRA, None, "hello, world"))
    text = png_text(saved[1].path)
    assert text == [
        ("prompt", json.dumps(PROMPT)),
        ("workflow", json.dumps(EXTRA["workflow"])),
        ("luna_extra", json.dumps(EXTRA["luna_extra"])),
        ("custom_metadata", "hello, world"),
        ("image_type", "ORIG"),
        ("model_name", "foo_v60"),
        ("model_path", "Illustrious/3DCG/foo_v60"),
        ("save_timestamp", "2025_03_07_080504"),
        ("batch_index", "1"),
    ]
    assert [kind for kind, _ in png_chunks(saved[1].path)][:10] == [b"IHDR"] + [b"tEXt"] * 9


def test_a_metadata_dict_overrides_custom_metadata(tmp_path):
    gen = {"model_name": "x", "seed": 42, "cfg": 7.5, "hires": True}
    saved = save(tmp_path, "png", JobMetadata.from_inputs(PROMPT, None, gen, "ignored"))
    keys = [k for k, _ in png_text(saved[0].path)]
    assert keys[:6] == ["prompt", "generation_metadata", "gen_model_name", "gen_seed", "gen_cfg", "gen_hires"]
    assert "custom_metadata" not in keys
    values = dict(png_text(saved[0].path))
    assert values["generation_metadata"] == json.dumps(gen)
    assert (values["gen_seed"], values["gen_cfg"], values["gen_hires"]) == ("42", "7.5", "True")


def test_non_latin1_custom_text_becomes_itxt(tmp_path):
    saved = save(tmp_path, "png", JobMetadata.from_inputs(None, None, None, "日本 ✓"))
    assert dict(png_text(saved[0].path))["custom_metadata"] == "日本 ✓"
    assert b"iTXt" in [kind for kind, _ in png_chunks(saved[0].path)]


def test_embed_off_writes_no_metadata(tmp_path):
    meta = JobMetadata.from_inputs(PROMPT, EXTRA, None, "x")
    png = save(tmp_path / "p", "png", meta, embed_metadata=False)
    webp = save(tmp_path / "w", "webp", meta, embed_metadata=False)
    jpeg = save(tmp_path / "j", "jpeg", meta, embed_metadata=False)
    assert png_text(png[0].path) == []
    assert b"EXIF" not in [kind for kind, _ in webp_chunks(webp[0].path)]
    assert jpeg_exif(jpeg[0].path) is None


def test_webp_exif_reads_back_as_comfyui_frontend_does(tmp_path):
    saved = save(tmp_path, "webp", JobMetadata.from_inputs(PROMPT, EXTRA, None, "note"))
    exif = webp_exif(saved[0].path)
    assert exif[:4] == b"MM\0*", "a still WebP's EXIF chunk is a bare TIFF, as PIL and ComfyUI write it"
    assert comfy_frontend_exif(exif) == {
        "prompt": json.dumps(PROMPT),
        "workflow": json.dumps(EXTRA["workflow"]),
        "luna_extra": json.dumps(EXTRA["luna_extra"]),
    }
    assert user_comment(saved[1].path) == (
        "Image Type: ORIG, Model: foo_v60, Model Path: Illustrious/3DCG/foo_v60, Timestamp: 2025_03_07_080504, "
        "Batch: 1, Custom: note"
    )
    kinds = [kind for kind, _ in webp_chunks(saved[0].path)]
    assert kinds[:2] == [b"VP8X", b"EXIF"], "EXIF before the image data (metadata.webp_exif_first)"


def test_webp_exif_tags_count_down_from_0x010f(tmp_path):
    saved = save(tmp_path, "webp", JobMetadata.from_inputs(PROMPT, EXTRA, None, ""))
    exif = Image.open(saved[0].path).getexif()
    assert exif[0x0110] == "prompt:" + json.dumps(PROMPT)
    assert exif[0x010F] == "workflow:" + json.dumps(EXTRA["workflow"])
    assert exif[0x010E] == "luna_extra:" + json.dumps(EXTRA["luna_extra"])


def test_exif_without_the_summary_is_byte_identical_to_comfyuis(reference):
    prompt, extra = reference_json(reference)
    ours = metadata.build_exif(JobMetadata.from_inputs(prompt, extra, None, ""), None).tobytes()
    theirs = webp_exif(reference / "single_webp_lossy_q90_00001_.webp")
    assert ours == b"Exif\0\0" + theirs


def test_the_frontend_reader_reads_comfyuis_own_webp(reference):
    prompt, extra = reference_json(reference)
    got = comfy_frontend_exif(webp_exif(reference / "single_webp_lossless_00001_.webp"))
    assert got == {"prompt": json.dumps(prompt), **{k: json.dumps(v) for k, v in extra.items()}}


def test_png_text_values_equal_comfyuis(tmp_path, reference):
    import numpy as np

    prompt, extra = reference_json(reference)
    tensor = np.load(reference / "single_tensor.npy")
    meta = JobMetadata.from_inputs(prompt, extra, None, "")
    options = SaveOptions(output_dir=str(tmp_path), filename="x", timestamp=WHEN, metadata=meta)
    saved = save_local(options, [Slot(tensor, "", "png", False)])
    ours = png_text(saved[0].path)
    theirs = png_text(reference / "single_png_00001_.png")
    assert ours[: len(theirs)] == theirs
    assert (decoded(saved[0].path) == decoded(reference / "single_png_00001_.png")).all()


def test_jpeg_carries_the_same_exif(tmp_path):
    saved = save(tmp_path, "jpeg", JobMetadata.from_inputs(PROMPT, EXTRA, None, ""))
    exif = jpeg_exif(saved[0].path)
    assert comfy_frontend_exif(exif)["workflow"] == json.dumps(EXTRA["workflow"])
    assert saved[0].notes == []


def test_oversized_jpeg_metadata_drops_prompt_then_workflow_and_saves_anyway(tmp_path):
    big_prompt = {"text": "p" * 40_000}
    big_workflow = {"text": "w" * 40_000}
    saved = save(tmp_path / "a", "jpeg", JobMetadata.from_inputs(big_prompt, {"workflow": big_workflow}, None, ""))
    got = comfy_frontend_exif(jpeg_exif(saved[0].path))
    assert "prompt" not in got and got["workflow"] == json.dumps(big_workflow)
    assert saved[0].notes == ["prompt left out of the JPEG metadata: it does not fit the 64 KiB EXIF segment"]

    huge_workflow = {"text": "w" * 70_000}
    extra = {"workflow": huge_workflow, "luna_extra": 1}
    saved = save(tmp_path / "b", "jpeg", JobMetadata.from_inputs(big_prompt, extra, None, ""))
    got = comfy_frontend_exif(jpeg_exif(saved[0].path))
    assert got == {"luna_extra": "1"}
    assert [n.split(" ")[0] for n in saved[0].notes] == ["prompt", "workflow"]
    assert decoded(saved[0].path).shape == (48, 64, 3)


def test_jpeg_without_room_even_for_the_summary_has_no_exif(tmp_path):
    saved = save(tmp_path, "jpeg", JobMetadata.from_inputs(None, None, None, "c" * 70_000))
    assert jpeg_exif(saved[0].path) is None
    assert saved[0].notes[-1].startswith("no metadata embedded")


def test_facts_and_summary_text():
    facts = ImageFacts("UP", "n", "d/n", "2025_01_02_030405", 3)
    meta = JobMetadata.from_inputs(None, None, {"seed": 1}, "ignored")
    assert metadata.summary_text(meta, facts) == (
        "Image Type: UP, Model: n, Model Path: d/n, Timestamp: 2025_01_02_030405, Batch: 3, "
        'Generation Metadata: {"seed": 1}'
    )

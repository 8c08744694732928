"""The shared save-semantics vectors (``tests/vectors/save_cases.json``, also run by the daemon's Rust tests)
through the local save and through the real daemon: the same relative paths, gate decisions and scores, decoded
pixels and metadata, so both modes of the node give the same result."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from helpers import comfy_frontend_exif, decoded, jpeg_exif, png_text, user_comment, webp_exif
from luna_multi_saver import client, node, paths
from luna_multi_saver.local_save import SaveOptions, Slot, save_local
from luna_multi_saver.metadata import JobMetadata
from luna_multi_saver.templates import Timestamp

VECTORS = REPO / "tests" / "vectors" / "save_cases.json"


def _load() -> dict:
    return json.loads(VECTORS.read_text()) if VECTORS.is_file() else {"cases": [], "refused": []}


DATA = _load()
CASES = DATA["cases"]
pytestmark = pytest.mark.skipif(not VECTORS.is_file(), reason=f"{VECTORS} not found")


def generate(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """(what is submitted, the u8 pixels expected back), as tests/vectors/README.md defines the generators."""
    w, h, c, kind = spec["width"], spec["height"], spec["channels"], spec["kind"]
    y, x, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    if kind == "float_ramp":
        f = ((x + 2 * y + 3 * ch) % 97).astype(np.float32) / np.float32(80.0) - np.float32(0.1)
        return f, np.clip(255.0 * f, 0, 255).astype(np.uint8)
    if kind == "flat":
        u = np.full((h, w, c), spec["value"], dtype=np.uint8)
    elif kind == "pattern":
        u = ((x * 7 + y * 3 + ch * 50) % 256).astype(np.uint8)
    elif kind == "checker":
        u = (((x // 4 + y // 4) % 2) * 255).astype(np.uint8)
    elif kind == "ramp":
        u = (x * 255 // max(w - 1, 1)).astype(np.uint8)
    elif kind == "noise":
        u = np.empty(h * w * c, dtype=np.uint8)
        state = spec["seed"]
        for i in range(u.size):
            state = (state * 1103515245 + 12345) % (1 << 31)
            u[i] = (state >> 16) & 255
        u = u.reshape(h, w, c)
    else:
        raise ValueError(kind)
    return u, u


def job_parts(case: dict):
    job = case["job"]
    raw = job.get("metadata") or {}
    meta = JobMetadata.from_inputs(
        raw.get("prompt"), raw.get("extra_pnginfo"), raw.get("metadata"), raw.get("custom_metadata")
    )
    embed = job.get("embed_metadata", True)
    options = SaveOptions(
        output_dir="",
        save_path=job.get("save_path", ""),
        filename=job.get("filename", "luna"),
        model_name=job.get("model_name", ""),
        filename_index=job.get("filename_index", 0),
        timestamp=Timestamp(ms=DATA["timestamp_ms"], utc_offset_s=DATA["utc_offset_s"]),
        lossless_webp=job.get("lossless_webp", False),
        quality_gate=job.get("quality_gate", "disabled"),
        min_quality_threshold=job.get("min_quality_threshold", 0.3),
        embed_metadata=embed,
        metadata=meta if embed else JobMetadata(),
    )
    slots, expected = [], []
    for slot in job["slots"]:
        generated = [generate(spec) for spec in slot["images"]]
        slots.append(Slot([g[0] for g in generated], slot["affix"], slot["format"], slot["subdir"]))
        expected += [(g[1], slot["format"]) for g in generated]
    return options, meta, slots, expected


def check_outputs(case: dict, root: Path, paths_written: list[str], expected, discarded: list[bool], scores) -> None:
    assert [str(Path(p).resolve().relative_to(root.resolve())) for p in paths_written] == case["files"]
    for i, (want, image) in enumerate(zip(case["images"], expected, strict=True)):
        pixels, fmt = image
        path = paths_written[i]
        assert discarded[i] == (want["state"] == "discarded"), (i, want)
        if want["scores"] is not None:
            for key, value in want["scores"].items():
                assert scores[i][key] == pytest.approx(value, abs=1e-9), (i, key)
        if fmt == "png" or (fmt == "webp" and case["job"].get("lossless_webp")):
            got = decoded(path)
            got = got[:, :, None] if got.ndim == 2 else got
            assert (got[:, :, : pixels.shape[2]] == pixels).all(), (i, path)
        assert int(pixels.astype(np.uint64).sum()) == want["u8_pixels_sha_hint"]
        if want["png_text"] is not None:
            assert [list(kv) for kv in png_text(path)] == want["png_text"]
        if fmt == "webp" and want["exif"] is not None:
            assert comfy_frontend_exif(webp_exif(path)) == want["exif"]
            assert user_comment(path) == want["user_comment"]
        if fmt == "jpeg" and want["exif"] is not None:
            assert comfy_frontend_exif(jpeg_exif(path)) == want["exif"]
            assert user_comment(path) == want["user_comment"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_node_serialises_metadata_as_the_vectors_say(case):
    _, meta, _, _ = job_parts(case)
    assert meta.to_wire() == case["wire_metadata"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_local_save_matches_the_vectors(case, tmp_path):
    options, _, slots, expected = job_parts(case)
    options = SaveOptions(**{**options.__dict__, "output_dir": str(tmp_path)})
    saved = save_local(options, slots)
    scores = [{"variance": s.gate.variance, "edge_density": s.gate.edge_density} for s in saved]
    check_outputs(case, tmp_path, [s.path for s in saved], expected, [s.discarded for s in saved], scores)


@pytest.mark.parametrize("refused", DATA["refused"], ids=[json.dumps(r["job"]) for r in DATA["refused"]])
def test_local_save_refuses_what_the_vectors_refuse(refused, tmp_path):
    job = refused["job"]
    options = SaveOptions(
        output_dir=str(tmp_path / "root"),
        save_path=job.get("save_path", ""),
        filename=job.get("filename", "luna"),
        model_name=job.get("model_name", ""),
    )
    with pytest.raises(paths.PathRefused):
        save_local(
            options, [Slot(generate({"kind": "pattern", "width": 4, "height": 4, "channels": 3})[0], "A", "png", True)]
        )
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


# Templates, gates, WebP/JPEG and metadata were being added to the daemon while these tests were written.


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_daemon_matches_the_vectors(case, daemon, tmp_path):
    options, meta, slots, expected = job_parts(case)
    job = dataclasses.replace(node.daemon_job_options(options), output_dir=str(tmp_path))
    wire_slots = [client.SlotImages(s.images, format=s.format, affix=s.affix, subdir=s.subdir) for s in slots]
    with daemon.client() as c:
        accepted = c.submit(job, wire_slots, meta.to_wire() if options.embed_metadata else None)
        status = c.wait(accepted.job_id)
    images = status["images"]
    assert [i["state"] for i in images] == [i["state"] for i in case["images"]], images
    scores = [i.get("scores") or {} for i in images]
    check_outputs(
        case, tmp_path, [i["path"] for i in images], expected, [i["state"] == "discarded" for i in images], scores
    )


@pytest.mark.parametrize("refused", DATA["refused"], ids=[json.dumps(r["job"]) for r in DATA["refused"]])
def test_the_daemon_refuses_what_the_vectors_refuse(refused, daemon, tmp_path):
    job = refused["job"]
    options = client.JobOptions(
        output_dir=str(tmp_path / "root"),
        save_path=job.get("save_path", ""),
        filename=job.get("filename", "luna"),
        model_name=job.get("model_name", ""),
    )
    image = generate({"kind": "pattern", "width": 4, "height": 4, "channels": 3})[0]
    with daemon.client() as c, pytest.raises(client.DaemonError) as refusal:
        c.submit(options, [client.SlotImages([image], affix="A", subdir=True)])
    assert refusal.value.name == refused["error_code"]
    assert not any(p.is_file() for p in tmp_path.rglob("*"))

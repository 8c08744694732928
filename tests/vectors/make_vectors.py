"""Generate save_cases.json: the shared save-semantics test vectors.

Both implementations run these cases: the daemon (Rust integration test tests/it/vectors.rs) and the node's
local save (Python, comfyui/tests). The expected values here are computed independently of either, with numpy
and Python's own json/str, straight from SPEC §4. Regenerate with:

    python3 tests/vectors/make_vectors.py
"""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

TIMESTAMP_MS = 1741338304000  # 2025-03-07 09:05:04 UTC
UTC_OFFSET_S = 3600  # the client ran at 10:05:04 local time


def pixels(spec):
    """The u8 pixels a spec denotes ([H, W, C]); float specs are converted as ComfyUI does."""
    w, h, c, kind = spec["width"], spec["height"], spec["channels"], spec["kind"]
    y, x, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    if kind == "flat":
        return np.full((h, w, c), spec["value"], dtype=np.uint8)
    if kind == "pattern":  # a busy but deterministic pattern
        return ((x * 7 + y * 3 + ch * 50) % 256).astype(np.uint8)
    if kind == "checker":
        return (((x // 4 + y // 4) % 2) * 255).astype(np.uint8)
    if kind == "ramp":  # a smooth horizontal ramp: high variance, low edge density
        return np.broadcast_to((x * 255 // max(w - 1, 1)).astype(np.uint8), (h, w, c)).copy()
    if kind == "noise":
        return lcg_bytes(spec["seed"], h * w * c).reshape(h, w, c)
    if kind == "float_ramp":  # float32 input, including values outside 0..1
        f = ((x + 2 * y + 3 * ch) % 97).astype(np.float32) / np.float32(80.0) - np.float32(0.1)
        return np.clip(255.0 * f, 0, 255).astype(np.uint8)
    raise ValueError(kind)


def lcg_bytes(seed, n):
    """state = (state * 1103515245 + 12345) mod 2^31; byte = (state >> 16) & 255."""
    out = np.empty(n, dtype=np.uint8)
    state = seed
    for i in range(n):
        state = (state * 1103515245 + 12345) % (1 << 31)
        out[i] = (state >> 16) & 255
    return out


def scores(img):
    """SPEC §4 gate scores on a u8 image."""
    img = img.astype(np.float64)
    gray = img[:, :, 0] if img.shape[2] == 1 else 0.299 * img[:, :, 0] + 0.587 * img[:, :, 1] + 0.114 * img[:, :, 2]
    variance = min(1.0, float(np.var(gray)) / 3000.0)
    g = gray / 255.0
    edge = (np.mean(np.abs(g[:-1, :] - g[1:, :])) + np.mean(np.abs(g[:, :-1] - g[:, 1:]))) / 2.0
    return {"variance": variance, "edge_density": min(1.0, float(edge) / 0.05)}


def wire_metadata(meta):
    """JobMetadata as the node sends it: json.dumps of each value, str() of each metadata field."""
    out = {
        "prompt": None,
        "extra_pnginfo": [],
        "generation_metadata": None,
        "generation_fields": [],
        "custom_metadata": None,
    }
    if meta.get("prompt") is not None:
        out["prompt"] = json.dumps(meta["prompt"])
    for k, v in (meta.get("extra_pnginfo") or {}).items():
        out["extra_pnginfo"].append([k, json.dumps(v)])
    if meta.get("metadata") is not None:
        out["generation_metadata"] = json.dumps(meta["metadata"])
        out["generation_fields"] = [[k, str(v)] for k, v in meta["metadata"].items()]
    elif meta.get("custom_metadata"):
        out["custom_metadata"] = meta["custom_metadata"]
    return out


def model_info(raw):
    n = (raw or "").replace("\\", "/").rstrip("/")
    if not n:
        return "", "UnknownModel", ""
    d, _, base = n.rpartition("/")
    for ext in (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
            break
    return (f"{d}/{base}" if d else base), base, d


def expected_text(job, wire, affix, batch_index):
    """PNG tEXt (key, value) pairs in order, and the EXIF view ComfyUI's frontend gets."""
    if not job.get("embed_metadata", True):
        return [], {}, None
    path, name, _ = model_info(job.get("model_name", ""))
    local = datetime.fromtimestamp(TIMESTAMP_MS / 1000, timezone(timedelta(seconds=UTC_OFFSET_S)))
    stamp = local.strftime("%Y_%m_%d_%H%M%S")
    text = []
    if wire["prompt"] is not None:
        text.append(["prompt", wire["prompt"]])
    text += [list(kv) for kv in wire["extra_pnginfo"]]
    if wire["generation_metadata"] is not None:
        text.append(["generation_metadata", wire["generation_metadata"]])
        text += [[f"gen_{k}", v] for k, v in wire["generation_fields"]]
    elif wire["custom_metadata"]:
        text.append(["custom_metadata", wire["custom_metadata"]])
    text += [
        ["image_type", affix],
        ["model_name", name],
        ["model_path", path],
        ["save_timestamp", stamp],
        ["batch_index", str(batch_index)],
    ]
    exif = {}
    if wire["prompt"] is not None:
        exif["prompt"] = wire["prompt"]
    for k, v in wire["extra_pnginfo"]:
        exif[k] = v
    comment = f"Image Type: {affix}, Model: {name}, Model Path: {path}, Timestamp: {stamp}, Batch: {batch_index}"
    if wire["generation_metadata"] is not None:
        comment += f", Generation Metadata: {wire['generation_metadata']}"
    elif wire["custom_metadata"]:
        comment += f", Custom: {wire['custom_metadata']}"
    return text, exif, comment


WORKFLOW = {
    "last_node_id": 3,
    "nodes": [{"id": 1, "type": "KSampler", "title": 'Ünïcode "quoted" \\ näme'}],
    "extra": {"ds": {"scale": 1.1, "offset": [0.5, -2.0]}},
}
PROMPT = {
    "3": {
        "class_type": "KSampler",
        "inputs": {"seed": 42, "cfg": 7.5, "denoise": 1.0, "tiny": 1e-05},
    }
}

CASES = [
    {
        "name": "defaults_png_single",
        "job": {
            "save_path": "",
            "filename": "%time:YYYY_mm_dd.HH.MM.SS%_%model_name%",
            "model_name": "Illustrious/3DCG/foo_v60.safetensors",
            "slots": [
                {
                    "affix": "ORIG",
                    "format": "png",
                    "subdir": True,
                    "images": [{"kind": "pattern", "width": 24, "height": 16, "channels": 3}],
                }
            ],
        },
        "files": ["ORIG/2025_03_07.10.05.04_foo_v60_ORIG.png"],
    },
    {
        "name": "templates_batch_webp_lossless",
        "job": {
            "save_path": "%model_dir%/%date:yyyy-MM-dd%",
            "filename": "img_%index%",
            "filename_index": 7,
            "model_name": "Illustrious\\3DCG\\foo_v60.ckpt",
            "lossless_webp": True,
            "slots": [
                {
                    "affix": "UPSCALED",
                    "format": "webp",
                    "subdir": False,
                    "images": [
                        {"kind": "pattern", "width": 20, "height": 12, "channels": 3},
                        {
                            "kind": "float_ramp",
                            "width": 20,
                            "height": 12,
                            "channels": 3,
                        },
                    ],
                }
            ],
        },
        "files": [
            "Illustrious/3DCG/2025-03-07/img_7_UPSCALED_0.webp",
            "Illustrious/3DCG/2025-03-07/img_7_UPSCALED_1.webp",
        ],
    },
    {
        "name": "three_slots_three_formats",
        "job": {
            "save_path": "runs/%model_name%",
            "filename": "shot",
            "model_name": "",
            "slots": [
                {
                    "affix": "ORIG",
                    "format": "png",
                    "subdir": True,
                    "images": [{"kind": "pattern", "width": 16, "height": 16, "channels": 4}],
                },
                {
                    "affix": "FINAL",
                    "format": "jpeg",
                    "subdir": True,
                    "images": [{"kind": "pattern", "width": 16, "height": 16, "channels": 4}],
                },
                {
                    "affix": "DETAILED",
                    "format": "webp",
                    "subdir": False,
                    "images": [{"kind": "pattern", "width": 16, "height": 16, "channels": 1}],
                },
            ],
        },
        "files": [
            "runs/UnknownModel/ORIG/shot_ORIG.png",
            "runs/UnknownModel/FINAL/shot_FINAL.jpg",
            "runs/UnknownModel/shot_DETAILED.webp",
        ],
    },
    {
        "name": "gate_variance_each_image_judged_alone",
        "job": {
            "filename": "g",
            "quality_gate": "variance",
            "min_quality_threshold": 0.3,
            "slots": [
                {
                    "affix": "ORIG",
                    "format": "png",
                    "subdir": True,
                    "images": [
                        {
                            "kind": "flat",
                            "value": 128,
                            "width": 16,
                            "height": 16,
                            "channels": 3,
                        },
                        {
                            "kind": "noise",
                            "seed": 7,
                            "width": 16,
                            "height": 16,
                            "channels": 3,
                        },
                    ],
                }
            ],
        },
        "files": ["_discarded/ORIG/g_ORIG_0.png", "ORIG/g_ORIG_1.png"],
    },
    {
        "name": "gate_edge_density_blurry_discarded",
        "job": {
            "save_path": "out",
            "filename": "e",
            "quality_gate": "edge_density",
            "min_quality_threshold": 0.3,
            "slots": [
                {
                    "affix": "ORIG",
                    "format": "png",
                    "subdir": False,
                    "images": [
                        {"kind": "ramp", "width": 64, "height": 8, "channels": 3},
                        {"kind": "checker", "width": 16, "height": 16, "channels": 3},
                    ],
                }
            ],
        },
        "files": ["out/_discarded/e_ORIG_0.png", "out/e_ORIG_1.png"],
    },
    {
        "name": "gate_both_needs_both",
        "job": {
            "filename": "b",
            "quality_gate": "both",
            "min_quality_threshold": 0.3,
            "slots": [
                {
                    "affix": "ORIG",
                    "format": "png",
                    "subdir": False,
                    "images": [
                        {"kind": "ramp", "width": 64, "height": 8, "channels": 3},
                        {
                            "kind": "noise",
                            "seed": 3,
                            "width": 16,
                            "height": 16,
                            "channels": 3,
                        },
                    ],
                }
            ],
        },
        "files": ["_discarded/b_ORIG_0.png", "b_ORIG_1.png"],
    },
    {
        "name": "metadata_prompt_workflow_custom",
        "job": {
            "filename": "m",
            "model_name": "sd/base.safetensors",
            "metadata": {
                "prompt": PROMPT,
                "extra_pnginfo": {"workflow": WORKFLOW, "luna_extra": {"k": [1, 2]}},
                "custom_metadata": "hello, world",
            },
            "slots": [
                {
                    "affix": "ORIG",
                    "format": "png",
                    "subdir": False,
                    "images": [{"kind": "pattern", "width": 8, "height": 8, "channels": 3}],
                },
                {
                    "affix": "WEB",
                    "format": "webp",
                    "subdir": False,
                    "images": [{"kind": "pattern", "width": 8, "height": 8, "channels": 3}],
                },
            ],
        },
        "files": ["m_ORIG.png", "m_WEB.webp"],
    },
    {
        "name": "metadata_generation_dict_overrides_custom",
        "job": {
            "filename": "gen",
            "metadata": {
                "prompt": PROMPT,
                "metadata": {"sampler": "euler", "seed": 42, "cfg": 7.5, "hires": True},
                "custom_metadata": "ignored",
            },
            "slots": [
                {
                    "affix": "ORIG",
                    "format": "png",
                    "subdir": False,
                    "images": [{"kind": "pattern", "width": 8, "height": 8, "channels": 3}],
                }
            ],
        },
        "files": ["gen_ORIG.png"],
    },
    {
        "name": "metadata_off",
        "job": {
            "filename": "off",
            "embed_metadata": False,
            "metadata": {"prompt": PROMPT},
            "slots": [
                {
                    "affix": "ORIG",
                    "format": "png",
                    "subdir": False,
                    "images": [{"kind": "pattern", "width": 8, "height": 8, "channels": 3}],
                }
            ],
        },
        "files": ["off_ORIG.png"],
    },
    {
        "name": "empty_filename_uses_timestamp_and_model",
        "job": {
            "filename": "",
            "model_name": "a/b/c.pth",
            "slots": [
                {
                    "affix": "ORIG",
                    "format": "png",
                    "subdir": False,
                    "images": [{"kind": "pattern", "width": 8, "height": 8, "channels": 3}],
                }
            ],
        },
        "files": ["2025_03_07_100504_c_ORIG.png"],
    },
    {
        # What a template substitutes never holds a character a file name cannot: `: * ? " < > |` and control
        # characters become `_` (ComfyUI's frontend replacement); `/` from a template still makes a folder.
        "name": "template_values_with_unstorable_characters_are_replaced",
        "job": {
            "save_path": "%date:yyyy/MM%/%time:HH:MM%",
            "filename": "%date:yyyy-MM-dd hh:mm:ss%_%model_name%",
            "model_name": 'dir/a:b*"c?.safetensors',
            "slots": [
                {
                    "affix": "ORIG",
                    "format": "png",
                    "subdir": False,
                    "images": [{"kind": "pattern", "width": 8, "height": 8, "channels": 3}],
                }
            ],
        },
        "files": ["2025/03/10_05/2025-03-07 10_05_04_a_b__c__ORIG.png"],
    },
]

TRAVERSAL = [
    {"save_path": "../x"},
    {"save_path": "/etc/x"},
    {"save_path": "..\\x"},
    {"save_path": "C:\\x"},
    {"save_path": "\\\\?\\x"},
    {"filename": "con"},
    {"filename": "a\u0000b"},
    {"filename": "literal:colon"},
    {"save_path": "ok/../../x"},
    {"save_path": "%model_dir%", "model_name": "../../etc/passwd.safetensors"},
    {"filename": "%model_path%", "model_name": "/etc/evil.ckpt"},
]


def build():
    cases = []
    for case in CASES:
        job = case["job"]
        wire = wire_metadata(job.get("metadata") or {})
        images = []
        for slot in job["slots"]:
            for b, spec in enumerate(slot["images"]):
                px = pixels(spec)
                gate = job.get("quality_gate", "disabled")
                s = scores(px)
                thr = job.get("min_quality_threshold", 0.3)
                checks = {
                    "variance": ["variance"],
                    "edge_density": ["edge_density"],
                    "both": ["variance", "edge_density"],
                }.get(gate, [])
                passed = all(s[k] >= thr for k in checks)
                text, exif, comment = expected_text(job, wire, slot["affix"], b)
                images.append(
                    {
                        "state": "written" if passed else "discarded",
                        "scores": {k: s[k] for k in checks} if checks else None,
                        "png_text": text if slot["format"] == "png" else None,
                        "exif": exif if slot["format"] != "png" and text else None,
                        "user_comment": comment if slot["format"] != "png" else None,
                        "u8_pixels_sha_hint": int(px.astype(np.uint64).sum()),
                    }
                )
        cases.append(
            {
                "name": case["name"],
                "job": job,
                "wire_metadata": wire,
                "files": case["files"],
                "images": images,
            }
        )
    return {
        "comment": "Generated by tests/vectors/make_vectors.py; see tests/vectors/README.md.",
        "timestamp_ms": TIMESTAMP_MS,
        "utc_offset_s": UTC_OFFSET_S,
        "cases": cases,
        "refused": [{"job": t, "error_code": "invalid_job"} for t in TRAVERSAL],
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("save_cases.json")
    out.write_text(json.dumps(build(), indent=1, ensure_ascii=True) + "\n")
    print(f"wrote {out}")

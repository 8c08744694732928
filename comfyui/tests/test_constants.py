"""Issue 12.1: ``luna_multi_saver/constants.json`` is the one place for the facts both languages and the docs state.

The Python side is built from it (``constants.py``: JobOptions, SaveOptions, the error names, the segment layout), so
these tests check what is built and check the docs against the file; ``tests/it/constants.rs`` checks the Rust code.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from conftest import REPO
from luna_multi_saver import client, constants, local_save, node, shm, templates

DATA = json.loads((REPO / "comfyui" / "luna_multi_saver" / "constants.json").read_text())
PROTOCOL_MD = (REPO / "docs" / "PROTOCOL.md").read_text()
GUIDE_MD = (REPO / "docs" / "CLIENT_GUIDE.md").read_text()


def _fields(cls) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def test_job_options_are_the_shared_description():
    expected = {o["name"]: o.get("default", dataclasses.MISSING) for o in DATA["job_options"]}
    assert _fields(client.JobOptions) == expected
    assert next(iter(_fields(client.JobOptions))) == "output_dir", "the one required option comes first"


def test_save_options_are_the_shared_description_with_the_executions_timestamp():
    expected = {o["name"]: o.get("default", dataclasses.MISSING) for o in DATA["job_options"]}
    del expected["timestamp_ms"], expected["utc_offset_s"]
    save = _fields(local_save.SaveOptions)
    assert {k: v for k, v in save.items() if k not in ("timestamp", "metadata")} == expected
    assert set(save) - set(expected) == {"timestamp", "metadata"}


def test_the_node_carries_every_option_to_the_daemon():
    # Every shared option reaches the wire with the value the local save would use, none by a hand-written list.
    when = templates.Timestamp(ms=1_741_335_904_000, utc_offset_s=3600)
    changed = {"save_path": "p", "filename": "f", "model_name": "m", "filename_index": 7, "png_compression": 9}
    changed |= {"lossy_quality": 77, "lossless_webp": True, "quality_gate": "both", "min_quality_threshold": 0.5}
    changed |= {"embed_metadata": False, "batch": "night-1", "thumbnails": True, "thumbnail_size": 128}
    changed |= {"zip": True}
    changed |= {"png_bit_depth": 16, "exr_bit_depth": 16, "exr_input_color_space": "linear"}
    changed |= {"avif_quality": 55, "avif_speed": 9, "avif_bit_depth": 8}
    changed |= {"jxl_bit_depth": 16}
    assert set(changed) | {"output_dir", "timestamp_ms", "utc_offset_s"} == {o["name"] for o in DATA["job_options"]}
    save = local_save.SaveOptions(output_dir="/out", timestamp=when, **changed)
    wire = constants.wire_options(node.daemon_job_options(save))
    assert wire == {"output_dir": "/out", "timestamp_ms": when.ms, "utc_offset_s": 3600, **changed}


def test_unset_optional_options_are_omitted_and_values_take_their_wire_type():
    wire = constants.wire_options(client.JobOptions(output_dir="/o", filename_index=True, min_quality_threshold=1))
    assert "timestamp_ms" not in wire and "utc_offset_s" not in wire
    assert type(wire["filename_index"]) is int and type(wire["min_quality_threshold"]) is float


def test_the_client_and_the_segment_layout_use_the_file():
    assert (DATA["protocol"]["name"], DATA["protocol"]["version"]) == (client.PROTOCOL_NAME, client.PROTOCOL_VERSION)
    assert DATA["protocol"]["max_frame_len"] == client.MAX_FRAME_LEN
    assert DATA["metadata"]["inline_max_bytes"] == client.INLINE_METADATA_MAX
    assert {e["code"]: e["name"] for e in DATA["error_codes"]} == client.ERROR_NAMES
    assert (client.VERSION_MISMATCH, client.BUSY) == (3, 12)
    segment = DATA["segment"]
    assert shm.MAGIC == b"LUNASEG\0" == segment["magic"].encode()
    assert (shm.HEADER_LEN, shm.STATE_OFFSET, shm.FLAGS_OFFSET) == (64, 12, 13)
    assert (shm.PID_OFFSET, shm.RELEASE_COUNT_OFFSET, shm.ALIGN, shm.MAX_NAME_LEN) == (16, 24, 64, 64)


# -- the docs, checked against the file ---------------------------------------------------------------------------


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the first table after ``heading``."""
    start = markdown.index(heading)
    rows = []
    for line in markdown[start:].splitlines()[1:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set(cells[0]) <= {"-", ":"}:
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the header row


def test_protocol_md_lists_the_error_codes_of_the_file():
    rows = _table_rows(PROTOCOL_MD, "## 9. Error codes")
    assert [(int(r[0]), r[1].strip("`")) for r in rows] == [(e["code"], e["name"]) for e in DATA["error_codes"]]


def _doc_default(value) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def test_protocol_md_describes_the_job_options_of_the_file():
    rows = {r[0].strip("`"): r for r in _table_rows(PROTOCOL_MD, "#### 7.2.1 SubmitJob")}
    for option in DATA["job_options"]:
        name, wire_type, default = option["name"], option["type"], option.get("default", dataclasses.MISSING)
        assert name in rows, f"PROTOCOL.md §7.2.1 has no row for the job option {name}"
        _, doc_type, doc_default, _meaning = rows[name]
        if option.get("values"):
            assert doc_type == "enumerated `str`: " + ", ".join(f'`"{v}"`' for v in option["values"])
        else:
            assert doc_type == f"`{wire_type}`", name
        expected = "required" if default is dataclasses.MISSING else _doc_default(default)
        assert doc_default.strip("`") == expected.strip("`"), name


def _kib(n: int) -> str:
    return f"{n // 1024} KiB"


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ("PROTOCOL.md", f"(the reference clients use the blob above {_kib(DATA['metadata']['inline_max_bytes'])})"),
        ("PROTOCOL.md", f"(default {DATA['daemon_defaults']['max_connections']}, setting `max_connections`)"),
        ("CLIENT_GUIDE.md", f"| connections | {DATA['daemon_defaults']['max_connections']} at once"),
        ("CLIENT_GUIDE.md", f"| protocol version | {DATA['protocol']['version']} |"),
        ("CLIENT_GUIDE.md", f"| MessagePack nesting | refused at {DATA['protocol']['max_nesting_depth']} levels"),
        ("CLIENT_GUIDE.md", f"| metadata blob | at most {DATA['metadata']['blob_max_bytes'] >> 20} MiB |"),
        ("CLIENT_GUIDE.md", f"| queue budget | {DATA['daemon_defaults']['queue_budget_mib']} MiB of pixel bytes"),
        ("CLIENT_GUIDE.md", f"a submit waits up to {DATA['daemon_defaults']['busy_wait_ms']} ms (`busy_wait`)"),
        ("CLIENT_GUIDE.md", f"| segment header | {DATA['segment']['header_len']} bytes, little-endian"),
    ],
)
def test_the_docs_state_the_files_values(doc, needle):
    text = PROTOCOL_MD if doc == "PROTOCOL.md" else GUIDE_MD
    assert needle in text, f"docs/{doc} should say {needle!r} (constants.json)"


def test_the_docs_state_no_other_inline_threshold():
    # The drift this file ends: 16 KiB in the client against 256 KiB in Rust and the docs.
    other = {"16 KiB", "64 KiB", "256 KiB"} - {_kib(DATA["metadata"]["inline_max_bytes"])}
    for doc, text in (("PROTOCOL.md", PROTOCOL_MD), ("CLIENT_GUIDE.md", GUIDE_MD)):
        for phrase in other:
            assert not re.search(rf"blob above {phrase}", text), f"docs/{doc} still says the blob starts above {phrase}"

"""The protocol's shared facts, loaded from ``constants.json`` beside this file (the one place they are written).

The Rust integration test ``tests/it/constants.rs`` checks the daemon's code against the same file, and
``comfyui/tests/test_constants.py`` checks the docs, so the two languages and the docs agree by construction.

``job_options`` there is the shared description of a job's options (everything of a ``SubmitJob`` but the slots,
the metadata and ``submit_id``): :func:`option_fields` turns it into dataclass fields, from which the client's
``JobOptions`` and the local save's ``SaveOptions`` are built, and :func:`wire_options` into the wire map.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_DATA: dict = json.loads((Path(__file__).with_name("constants.json")).read_text(encoding="utf-8"))

PROTOCOL_NAME: str = _DATA["protocol"]["name"]
PROTOCOL_VERSION: int = _DATA["protocol"]["version"]
MAX_FRAME_LEN: int = _DATA["protocol"]["max_frame_len"]
SEGMENT: dict = dict(_DATA["segment"])
INLINE_METADATA_MAX: int = _DATA["metadata"]["inline_max_bytes"]
DAEMON_DEFAULTS: dict = dict(_DATA["daemon_defaults"])
# Folder names and the thumbnails' WebP quality, as the daemon writes them (the local save writes the same).
DISCARDED_DIR: str = _DATA["outputs"]["discarded_dir"]
THUMBNAIL_DIR: str = _DATA["outputs"]["thumbnail_dir"]
THUMBNAIL_QUALITY: int = _DATA["outputs"]["thumbnail_quality"]
THUMBNAIL_SIZES: tuple[int, int] = tuple(_DATA["outputs"]["thumbnail_sizes"])  # smallest and largest, inclusive
ERROR_NAMES: dict[int, str] = {e["code"]: e["name"] for e in _DATA["error_codes"]}
ERROR_CODES: dict[str, int] = {name: code for code, name in ERROR_NAMES.items()}

# Wire type (as PROTOCOL.md writes it) -> the Python type a value is converted to before it is sent.
_PY_TYPES: dict[str, type] = {
    "str": str,
    "enumerated str": str,
    "bool": bool,
    "u8": int,
    "u32": int,
    "i32": int,
    "i64": int,
    "f64": float,
}


@dataclasses.dataclass(frozen=True)
class JobOption:
    """One entry of ``job_options``."""

    name: str
    wire_type: str
    default: Any = dataclasses.MISSING
    values: tuple[str, ...] = ()

    @property
    def optional(self) -> bool:
        """``<type> or nil``: None is a value, and None is omitted on the wire."""
        return self.wire_type.endswith(" or nil")

    @property
    def py_type(self) -> type:
        return _PY_TYPES[self.wire_type.removesuffix(" or nil")]

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


JOB_OPTIONS: tuple[JobOption, ...] = tuple(
    JobOption(o["name"], o["type"], o.get("default", dataclasses.MISSING), tuple(o.get("values", ())))
    for o in _DATA["job_options"]
)


def option_fields(without: Iterable[str] = ()) -> list[tuple]:
    """``dataclasses.make_dataclass`` fields for every job option but ``without``, in order (required first)."""
    skip = set(without)
    fields = []
    for option in JOB_OPTIONS:
        if option.name in skip:
            continue
        annotation = option.py_type | None if option.optional else option.py_type
        if option.required:
            fields.append((option.name, annotation))
        else:
            fields.append((option.name, annotation, dataclasses.field(default=option.default)))
    return fields


def wire_options(options: object) -> dict:
    """The job options of ``options`` (any object with the options as attributes) as the ``submit`` map's fields:
    each converted to its wire type, an unset optional one (None) omitted."""
    out = {}
    for option in JOB_OPTIONS:
        value = getattr(options, option.name)
        if value is None and option.optional:
            continue
        out[option.name] = option.py_type(value)
    return out

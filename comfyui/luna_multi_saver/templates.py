"""Template expansion and model-name parsing (SPEC section 4), shared by the local save and the daemon.

Templates in ``save_path`` and ``filename``:

- ``%model_name%``, ``%model_path%``, ``%model_dir%``: from the raw model name, see :func:`parse_model_name`.
- ``%index%``: the node's ``filename_index``.
- ``%time:FORMAT%``: tokens ``YYYY mm dd HH MM SS`` (year, month, day, 24-hour hour, minute, second).
- ``%date:FORMAT%``: ComfyUI's tokens ``yyyy yy MM M dd d hh h mm m ss s`` (month is ``M``, minute is ``m``;
  ``hh`` is the 24-hour hour, as in ComfyUI's frontend).

Expansion follows the original node (and the daemon's ``src/output/template.rs``): ``%model_path%``,
``%model_name%``, ``%model_dir%`` and ``%index%`` are replaced in that order, then every ``%time:...%``, then every
``%date:...%``; finally ``\\`` becomes ``/`` and trailing slashes are dropped. Unknown ``%...%`` sequences are left
as they are. Every part of the result is checked for confinement afterwards (:mod:`.paths`), so a value that
expands to ``..`` is refused there.

A template never makes a save fail by the characters it produces: in every value a template substitutes, the
characters no file name may hold on Windows (``: * ? " < > |``) and control characters become ``_``, the
replacement ComfyUI's frontend applies to the values it substitutes into ``filename_prefix``; ``/`` and ``\\``
stay (they make sub-folders, as in ComfyUI). So ``%date:yyyy-MM-dd hh:mm:ss%`` gives ``2025-03-07 09_05_04``. The
same set is replaced on every platform (one workflow, the same names everywhere). Literal text outside templates is
not changed: it is checked as typed and a forbidden character there is refused with the reason.

The time is the node's execution time as ``timestamp_ms`` (ms since the epoch) plus ``utc_offset_s``, exactly
what a daemon job carries, so both save paths format the same wall-clock fields.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from dataclasses import dataclass

MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
UNKNOWN_MODEL = "UnknownModel"


@dataclass(frozen=True)
class ModelInfo:
    """The three forms of a model name used by templates and metadata."""

    path: str
    name: str
    dir: str


def parse_model_name(raw: str | None) -> ModelInfo:
    """``Illustrious/3DCG/foo_v60.safetensors`` -> path ``Illustrious/3DCG/foo_v60``, name ``foo_v60``,
    dir ``Illustrious/3DCG``. Backslashes count as separators; one known extension is stripped
    (case-insensitively). An empty name gives name ``UnknownModel`` with empty path and dir (as the original)."""
    normalized = (raw or "").replace("\\", "/").rstrip("/")
    if not normalized:
        return ModelInfo(path="", name=UNKNOWN_MODEL, dir="")
    directory, _, name = normalized.rpartition("/")
    for ext in MODEL_EXTENSIONS:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    path = f"{directory}/{name}" if directory else name
    return ModelInfo(path=path, name=name, dir=directory)


def model_name_source(metadata: object, model_name_input: str | None) -> str:
    """The raw model name: ``metadata["model_name"]``, else ``metadata["model"]``, else the ``model_name`` input."""
    if isinstance(metadata, dict):
        for key in ("model_name", "model"):
            value = metadata.get(key)
            if value:
                return str(value)
    return model_name_input or ""


@dataclass(frozen=True)
class Timestamp:
    """One node execution's time: what a daemon job sends as ``timestamp_ms`` and ``utc_offset_s``."""

    ms: int
    utc_offset_s: int

    @classmethod
    def now(cls) -> Timestamp:
        ms = time.time_ns() // 1_000_000
        offset = _dt.datetime.fromtimestamp(ms // 1000).astimezone().utcoffset()
        return cls(ms=ms, utc_offset_s=int(offset.total_seconds()) if offset else 0)

    def local(self) -> _dt.datetime:
        """Local wall-clock time (naive), to the second, computed as the daemon does: UTC plus the offset."""
        return _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=self.ms // 1000 + self.utc_offset_s)

    def save_timestamp(self) -> str:
        """The ``save_timestamp`` metadata value: ``YYYY_mm_dd_HHMMSS`` local time, as the original node wrote."""
        return self.local().strftime("%Y_%m_%d_%H%M%S")


# Characters Windows refuses in any file name (separators aside); ComfyUI's frontend replaces the same ones.
_UNSTORABLE = re.compile(r'[:*?"<>|\x00-\x1f\x7f-\x9f]')


def storable(value: str) -> str:
    """A substituted value with every character a file name cannot hold on some platform replaced by ``_``."""
    return _UNSTORABLE.sub("_", value)


_TIME_TOKENS = re.compile(r"YYYY|mm|dd|HH|MM|SS")
_DATE_TOKENS = re.compile(r"dd?|MM?|hh?|mm?|ss?|yyy?y?")


def format_time(fmt: str, t: _dt.datetime) -> str:
    """``%time:FORMAT%``: YYYY year, mm month, dd day, HH hour, MM minute, SS second; other text is kept."""
    values = {
        "YYYY": f"{t.year:04d}",
        "mm": f"{t.month:02d}",
        "dd": f"{t.day:02d}",
        "HH": f"{t.hour:02d}",
        "MM": f"{t.minute:02d}",
        "SS": f"{t.second:02d}",
    }
    return _TIME_TOKENS.sub(lambda m: values[m.group(0)], fmt)


def format_date(fmt: str, t: _dt.datetime) -> str:
    """``%date:FORMAT%`` exactly as ComfyUI's frontend formats it (``formatDate`` in its text replacements)."""
    parts = {"d": t.day, "M": t.month, "h": t.hour, "m": t.minute, "s": t.second}

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "yy":
            return f"{t.year}"[2:]
        if text == "yyyy":
            return f"{t.year}"
        if text[0] in parts:
            return f"{parts[text[0]]}".rjust(len(text), "0")
        return text

    return _DATE_TOKENS.sub(replace, fmt)


def expand(template: str, model: ModelInfo, index: int, when: Timestamp) -> str:
    """Expands every template (see the module docs)."""
    if not template:
        return ""
    local = when.local()
    out = (
        template.replace("%model_path%", storable(model.path))
        .replace("%model_name%", storable(model.name))
        .replace("%model_dir%", storable(model.dir))
        .replace("%index%", str(index))
    )
    out = re.sub(r"%time:([^%]+)%", lambda m: storable(format_time(m.group(1), local)), out)
    out = re.sub(r"%date:([^%]+)%", lambda m: storable(format_date(m.group(1), local)), out)
    return out.replace("\\", "/").rstrip("/")

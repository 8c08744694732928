"""Embedded metadata (SPEC section 4), built from one :class:`JobMetadata` that is also what a daemon job carries,
so both save paths embed the same text.

- PNG: tEXt chunks in order ``prompt``, each ``extra_pnginfo`` key, then ``generation_metadata`` plus ``gen_<key>``
  per key (or ``custom_metadata``), then ``image_type``, ``model_name``, ``model_path``, ``save_timestamp``,
  ``batch_index``. Text that is not Latin-1 becomes an iTXt chunk (PIL's rule); JSON is always ASCII.
- WebP and JPEG: EXIF (big-endian ``MM``) whose IFD0 holds ASCII tags 0x0110 ``prompt:<json>``, 0x010F
  ``<first extra_pnginfo key>:<json>``, 0x010E for the next key and so on down, exactly as ComfyUI's
  SaveAnimatedWEBP writes them, plus an Exif-IFD UserComment (0x9286, ``UNICODE\\0`` + UTF-16BE) summary:
  ``Image Type: <affix>, Model: <name>, Model Path: <path>, Timestamp: <save_timestamp>, Batch: <n>`` then
  ``, Generation Metadata: <generation_metadata>`` or ``, Custom: <custom_metadata>`` (the original node's text).
- JPEG's APP1 segment holds at most 65533 bytes: ``prompt`` is dropped first, then ``workflow``, then the other
  extra_pnginfo keys, until the EXIF fits (if even the summary alone does not fit, no EXIF is written); each
  drop is reported with a note, in the daemon's words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from PIL import Image
from PIL.PngImagePlugin import PngInfo

PROMPT_TAG = 0x0110
FIRST_EXTRA_TAG = 0x010F
EXIF_IFD_POINTER = 0x8769
USER_COMMENT_TAG = 0x9286
JPEG_MAX_EXIF = 65533  # APP1 payload: 65535 minus the 2-byte length field ("Exif\0\0" included).


@dataclass(frozen=True)
class JobMetadata:
    """Metadata serialised once per node execution, exactly as it is embedded (the protocol's ``JobMetadata``)."""

    prompt: str | None = None
    extra_pnginfo: list[tuple[str, str]] = field(default_factory=list)
    generation_metadata: str | None = None
    generation_fields: list[tuple[str, str]] = field(default_factory=list)
    custom_metadata: str | None = None

    @classmethod
    def from_inputs(
        cls, prompt: object, extra_pnginfo: object, metadata: object, custom_metadata: str | None
    ) -> JobMetadata:
        """``json.dumps`` of each value with Python's defaults (ASCII, ``", "`` and ``": "``), as ComfyUI writes."""
        extra = []
        if isinstance(extra_pnginfo, dict):
            extra = [(str(key), json.dumps(value)) for key, value in extra_pnginfo.items()]
        if metadata is not None:
            fields = list(metadata.items()) if isinstance(metadata, dict) else []
            return cls(
                prompt=None if prompt is None else json.dumps(prompt),
                extra_pnginfo=extra,
                generation_metadata=json.dumps(metadata),
                generation_fields=[(str(key), str(value)) for key, value in fields],
            )
        return cls(
            prompt=None if prompt is None else json.dumps(prompt),
            extra_pnginfo=extra,
            custom_metadata=custom_metadata or None,
        )

    @staticmethod
    def wire_values(prompt: object, extra_pnginfo: object, metadata: object, custom_metadata: str | None) -> dict:
        """The protocol's ``JobMetadata`` with the large values (prompt, extra_pnginfo) sent as themselves: the
        daemon formats them exactly as ``json.dumps`` would, on its own time (``json.dumps`` of a 200 KB workflow
        costs the node ~2 ms; MessagePack ~0.5 ms). The small metadata dict is still serialised here."""
        wire: dict = {"prompt_value": prompt, "extra_pnginfo_values": []}
        if isinstance(extra_pnginfo, dict):
            wire["extra_pnginfo_values"] = [[str(key), value] for key, value in extra_pnginfo.items()]
        if metadata is not None:
            fields = list(metadata.items()) if isinstance(metadata, dict) else []
            wire["generation_metadata"] = json.dumps(metadata)
            wire["generation_fields"] = [[str(key), str(value)] for key, value in fields]
        elif custom_metadata:
            wire["custom_metadata"] = custom_metadata
        return wire

    def to_wire(self) -> dict:
        """The protocol's ``JobMetadata`` map."""
        return {
            "prompt": self.prompt,
            "extra_pnginfo": [[k, v] for k, v in self.extra_pnginfo],
            "generation_metadata": self.generation_metadata,
            "generation_fields": [[k, v] for k, v in self.generation_fields],
            "custom_metadata": self.custom_metadata,
        }


@dataclass(frozen=True)
class ImageFacts:
    """Per-image values embedded after the job's metadata."""

    image_type: str
    model_name: str
    model_path: str
    save_timestamp: str
    batch_index: int


def png_text_chunks(meta: JobMetadata, facts: ImageFacts) -> list[tuple[str, str]]:
    """The PNG text chunks, in order."""
    chunks: list[tuple[str, str]] = []
    if meta.prompt is not None:
        chunks.append(("prompt", meta.prompt))
    chunks.extend(meta.extra_pnginfo)
    if meta.generation_metadata is not None:
        chunks.append(("generation_metadata", meta.generation_metadata))
        chunks.extend((f"gen_{key}", value) for key, value in meta.generation_fields)
    elif meta.custom_metadata:
        chunks.append(("custom_metadata", meta.custom_metadata))
    chunks.extend(
        [
            ("image_type", facts.image_type),
            ("model_name", facts.model_name),
            ("model_path", facts.model_path),
            ("save_timestamp", facts.save_timestamp),
            ("batch_index", str(facts.batch_index)),
        ]
    )
    return chunks


def png_info(meta: JobMetadata, facts: ImageFacts) -> PngInfo:
    info = PngInfo()
    for key, value in png_text_chunks(meta, facts):
        info.add_text(key, value)
    return info


def summary_text(meta: JobMetadata, facts: ImageFacts) -> str:
    """The UserComment summary."""
    text = (
        f"Image Type: {facts.image_type}, Model: {facts.model_name}, Model Path: {facts.model_path}, "
        f"Timestamp: {facts.save_timestamp}, Batch: {facts.batch_index}"
    )
    if meta.generation_metadata is not None:
        text += f", Generation Metadata: {meta.generation_metadata}"
    elif meta.custom_metadata:
        text += f", Custom: {meta.custom_metadata}"
    return text


def build_exif(
    meta: JobMetadata, facts: ImageFacts | None, drop: frozenset[str] = frozenset(), summary: bool = True
) -> Image.Exif:
    """The EXIF for WebP and JPEG. ``drop`` names ``prompt`` or extra_pnginfo keys to leave out (their tags stay
    reserved, so the remaining keys keep their tag numbers); ``facts=None`` or ``summary=False`` omits the
    UserComment (without it the bytes equal ComfyUI's own EXIF)."""
    exif = Image.Exif()
    if meta.prompt is not None and "prompt" not in drop:
        exif[PROMPT_TAG] = f"prompt:{meta.prompt}"
    tag = FIRST_EXTRA_TAG
    for key, value in meta.extra_pnginfo:
        if key not in drop:
            exif[tag] = f"{key}:{value}"
        tag -= 1
    if summary and facts is not None:
        comment = b"UNICODE\0" + summary_text(meta, facts).encode("utf-16-be")
        exif.get_ifd(EXIF_IFD_POINTER)[USER_COMMENT_TAG] = comment
    return exif


def _left_out(what: str) -> str:
    return f"{what} left out of the JPEG metadata: it does not fit the 64 KiB EXIF segment"


def fit_jpeg_exif(meta: JobMetadata, facts: ImageFacts) -> tuple[bytes | None, list[str]]:
    """EXIF bytes (with the ``Exif\\0\\0`` prefix) that fit one JPEG APP1 segment, and one note per item dropped:
    ``prompt`` first, then ``workflow``, then the other extra_pnginfo keys; ``None`` if even the summary alone
    does not fit."""
    order = ["prompt"] if meta.prompt is not None else []
    keys = [key for key, _ in meta.extra_pnginfo]
    order += [k for k in keys if k == "workflow"] + [k for k in keys if k != "workflow"]
    dropped: list[str] = []
    while True:
        data = build_exif(meta, facts, frozenset(dropped)).tobytes()
        if len(data) <= JPEG_MAX_EXIF:
            return data, [_left_out(d) for d in dropped]
        if len(dropped) == len(order):
            notes = [_left_out(d) for d in dropped]
            return None, [*notes, "no metadata embedded: even the summary does not fit the 64 KiB EXIF segment"]
        dropped.append(order[len(dropped)])


def webp_exif_first(riff: bytes) -> bytes:
    """The same WebP with its EXIF chunk moved right after VP8X, before the image data, as the daemon writes it.

    Pillow (libwebp's mux) puts EXIF last. The container spec allows either ("Metadata and unknown chunks MAY
    appear out of order", RFC 9649 section 2.7), and before the image is where ComfyUI's frontend up to at least
    1.27 finds it: it walks chunks without skipping RIFF's padding byte, so after an odd-sized image chunk it
    never reached a trailing EXIF chunk. A file without VP8X or EXIF is returned as is."""
    if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WEBP":
        return riff
    chunks = []
    at = 12
    while at + 8 <= len(riff):
        size = int.from_bytes(riff[at + 4 : at + 8], "little")
        end = at + 8 + size + (size & 1)
        chunks.append(riff[at:end])
        at = end
    kinds = [c[:4] for c in chunks]
    if not kinds or kinds[0] != b"VP8X" or b"EXIF" not in kinds or at != len(riff):
        return riff
    exif = chunks.pop(kinds.index(b"EXIF"))
    chunks.insert(1, exif)
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + len(body).to_bytes(4, "little") + body

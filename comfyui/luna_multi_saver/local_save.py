"""The in-process save (daemon_save OFF, and the fallback when the daemon cannot take a job), with SPEC section 4
semantics: templates, confinement, never-overwriting atomic files, per-image quality gates, PNG (8 or 16 bits),
WebP, JPEG, EXR, AVIF and JPEG XL with the metadata ComfyUI writes. EXR needs the ``OpenEXR`` package; without it
the image is saved as a 16-bit PNG instead and the image's notes (and the log) say so: never a lost image. AVIF
needs a Pillow with AVIF (:mod:`.avif_format`); without it the image is saved as a PNG, with a note. JPEG XL needs
``pillow-jxl-plugin`` and is 8-bit only here (:mod:`.jxl`); otherwise a PNG with a note, likewise.

Every path and name of the job is expanded and checked before the first byte is written, so a refused template
leaves nothing behind.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, make_dataclass

import numpy as np
from PIL import Image

from . import avif_format, constants, deep_formats, gates, jxl, local_extras, metadata, paths, templates
from .pixels import images_of, to_uint8

FORMATS = ("png", "webp", "jpeg", "exr", "avif", "jxl")
EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg", "exr": "exr", "avif": "avif", "jxl": "jxl"}
EXR_MISSING_NOTE = "EXR needs the OpenEXR package (pip install openexr) for local saves; saved as a 16-bit PNG instead"
DISCARDED_DIR = constants.DISCARDED_DIR
MAX_PARALLEL = 4


@dataclass(frozen=True)
class Slot:
    """One image input: a batch ``[B, H, W, C]`` (or a list of ``[H, W, C]`` images) saved with one affix, format
    and sub-folder choice."""

    images: object
    affix: str
    format: str
    subdir: bool


# Job-wide settings: the job options of constants.json (the same fields a daemon job carries), with the execution's
# timestamp in place of timestamp_ms/utc_offset_s, and the metadata as text.
SaveOptions = make_dataclass(
    "SaveOptions",
    [
        *constants.option_fields(without=("timestamp_ms", "utc_offset_s")),
        ("timestamp", templates.Timestamp, field(default_factory=templates.Timestamp.now)),
        ("metadata", metadata.JobMetadata, field(default_factory=metadata.JobMetadata)),
    ],
    frozen=True,
)
SaveOptions.__module__ = __name__


@dataclass
class SavedImage:
    """Where one image went."""

    slot: int
    batch_index: int
    path: str
    filename: str
    subfolder: str
    discarded: bool = False
    gate: gates.GateResult = field(default_factory=lambda: gates.GateResult(passed=True))
    notes: list[str] = field(default_factory=list)
    thumbnail: str | None = None  # with thumbnails on (local_extras)

    def ui(self) -> dict:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": "output"}


@dataclass(frozen=True)
class _Task:
    slot: int
    batch_index: int
    pixels: np.ndarray
    fmt: str
    stem: str
    affix_dir: str | None
    affix: str


def _join(*parts: str | None) -> str:
    return "/".join(p for p in parts if p)


class LocalSaver:
    """Saves one node execution's slots.

    The expanded file name may contain ``/``: the part before the last one is a sub-folder below the affix folder,
    the rest is the name (as the daemon does). An empty expanded file name becomes ``<save_timestamp>_<model_name>``
    (as the original node did)."""

    def __init__(self, options: SaveOptions):
        self.options = options
        self.model = templates.parse_model_name(options.model_name)
        self.save_path = self._expand(options.save_path)
        filename = self._expand(options.filename) or f"{options.timestamp.save_timestamp()}_{self.model.name}"
        self.name_dir, _, self.filename = filename.rpartition("/")

    def _expand(self, template: str) -> str:
        return templates.expand(template, self.model, self.options.filename_index, self.options.timestamp)

    def plan(self, slots: Sequence[Slot]) -> list[_Task]:
        """Expands and checks every directory and name of the job, writing nothing."""
        o = self.options
        if o.quality_gate not in gates.GATES:
            raise ValueError(f"quality_gate {o.quality_gate!r} is not one of {', '.join(gates.GATES)}")
        if not 0 <= o.png_compression <= 9:
            raise ValueError(f"png_compression {o.png_compression} is outside 0..9")
        if o.png_bit_depth not in (8, 16):
            raise ValueError(f"png_bit_depth {o.png_bit_depth} is not 8 or 16")
        if o.exr_bit_depth not in (16, 32):
            raise ValueError(f"exr_bit_depth {o.exr_bit_depth} is not 16 (half) or 32 (float)")
        if o.exr_input_color_space not in ("srgb", "linear"):
            raise ValueError(f"exr_input_color_space {o.exr_input_color_space!r} is not srgb or linear")
        avif_format.check_options(o.avif_quality, o.avif_speed, o.avif_bit_depth)
        if o.jxl_bit_depth not in (8, 16):
            raise ValueError(
                f"jxl_bit_depth {o.jxl_bit_depth} is not 8 or 16 (JPEG XL is saved losslessly at 8 or 16 bits per "
                "sample)"
            )
        local_extras.check_options(o)
        paths.split_sub_path(self.save_path)
        paths.split_sub_path(self.name_dir)
        paths.check_stem(self.filename)
        tasks = []
        for index, slot in enumerate(slots):
            if slot.format not in FORMATS:
                raise ValueError(f"slot {index + 1}: format {slot.format!r} is not one of {', '.join(FORMATS)}")
            batch = images_of(slot.images)
            if slot.affix:
                paths.check_stem(slot.affix, "affix")
            affix_dir = slot.affix if slot.subdir and slot.affix else None
            base = f"{self.filename}_{slot.affix}" if slot.affix else self.filename
            for b, pixels in enumerate(batch):
                stem = f"{base}_{b}" if len(batch) > 1 else base
                paths.check_stem(stem)
                tasks.append(_Task(index, b, pixels, slot.format, stem, affix_dir, slot.affix))
        return tasks

    def save(self, slots: Sequence[Slot], parallel: bool = True) -> list[SavedImage]:
        """Saves every image; results in slot order, then batch order."""
        tasks = self.plan(slots)
        if parallel and len(tasks) > 1:
            with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(tasks))) as pool:
                saved = list(pool.map(self._save_one, tasks))
        else:
            saved = [self._save_one(task) for task in tasks]
        local_extras.after_job(self.options, saved)  # the batch's ZIP archive
        return saved

    def _save_one(self, task: _Task) -> SavedImage:
        o = self.options
        fmt, ext = task.fmt, EXTENSIONS[task.fmt]
        notes: list[str] = []
        if fmt == "exr" and not deep_formats.exr_available():
            fmt, ext = "png16", "png"
            notes.append(EXR_MISSING_NOTE)
        elif fmt == "png" and o.png_bit_depth == 16:
            fmt = "png16"
        elif fmt == "avif" and not avif_format.available():
            fmt, ext = ("png16" if o.avif_bit_depth == 10 else "png"), "png"
            notes.append(avif_format.MISSING_NOTE)
        elif fmt == "avif" and o.avif_bit_depth == 10:
            notes.append(avif_format.EIGHT_BIT_NOTE)
        elif fmt == "jxl" and o.jxl_bit_depth == 16:
            fmt, ext = "png16", "png"
            notes.append(jxl.SIXTEEN_BIT_NOTE)
        elif fmt == "jxl" and not jxl.available():
            fmt, ext = "png", "png"
            notes.append(jxl.MISSING_NOTE)
        pixels = to_uint8(task.pixels)
        verdict = gates.judge(pixels, o.quality_gate, o.min_quality_threshold)
        sub_path = _join(self.save_path, None if verdict.passed else DISCARDED_DIR, task.affix_dir, self.name_dir)
        directory = paths.resolve_dir(o.output_dir, sub_path)
        facts = metadata.ImageFacts(
            image_type=task.affix,
            model_name=self.model.name,
            model_path=self.model.path,
            save_timestamp=o.timestamp.save_timestamp(),
            batch_index=task.batch_index,
        )
        image = _pil_image(pixels)
        text = metadata.png_text_chunks(o.metadata, facts) if o.embed_metadata else []

        def encode(out) -> None:
            if fmt == "png16":
                deep_formats.write_png16(out, task.pixels, o.png_compression, text)
            elif fmt == "exr":
                # OpenEXR writes to a path: a private file beside the target, copied into the atomic temp file.
                scratch = os.path.join(directory, f".luna-{secrets.token_hex(8)}.exr.tmp")
                try:
                    deep_formats.write_exr(scratch, task.pixels, o.exr_bit_depth == 16, o.exr_input_color_space, text)
                    with open(scratch, "rb") as f:
                        out.write(f.read())
                finally:
                    if os.path.exists(scratch):
                        os.unlink(scratch)
            elif fmt == "avif":
                exif = avif_format.exif_bytes(o.metadata, facts) if o.embed_metadata else None
                avif_format.save(out, image, o.avif_quality, o.avif_speed, exif)
            elif fmt == "png":
                info = metadata.png_info(o.metadata, facts) if o.embed_metadata else None
                image.save(out, "PNG", pnginfo=info, compress_level=o.png_compression)
            elif fmt == "jxl":
                jxl.write_jxl(out, image, metadata.build_exif(o.metadata, facts) if o.embed_metadata else None)
            elif fmt == "webp":
                # exact: keep the colour of fully transparent pixels, so lossless decodes to the same samples.
                kwargs: dict = {"lossless": o.lossless_webp, "exact": o.lossless_webp}
                if not o.lossless_webp:
                    kwargs["quality"] = o.lossy_quality
                if not o.embed_metadata:
                    image.save(out, "WEBP", **kwargs)
                    return
                # EXIF before the image data, as the daemon writes it (metadata.webp_exif_first says why).
                riff = io.BytesIO()
                image.save(riff, "WEBP", exif=metadata.build_exif(o.metadata, facts), **kwargs)
                out.write(metadata.webp_exif_first(riff.getvalue()))
            else:
                rgb = image.convert("RGB") if image.mode == "RGBA" else image
                kwargs = {"quality": o.lossy_quality}
                if o.embed_metadata:
                    exif, dropped = metadata.fit_jpeg_exif(o.metadata, facts)
                    notes.extend(dropped)
                    if exif is not None:
                        kwargs["exif"] = exif
                rgb.save(out, "JPEG", **kwargs)

        written = paths.write_new_file(directory, task.stem, ext, encode)
        real_root = os.path.realpath(o.output_dir)
        subfolder = os.path.relpath(os.path.dirname(written.path), real_root)
        saved = SavedImage(
            slot=task.slot,
            batch_index=task.batch_index,
            path=written.path,
            filename=os.path.basename(written.path),
            subfolder="" if subfolder == "." else subfolder,
            discarded=not verdict.passed,
            gate=verdict,
            notes=notes,
        )
        local_extras.after_image(o, saved, pixels, facts)  # its thumbnail
        return saved


def _pil_image(pixels: np.ndarray) -> Image.Image:
    if pixels.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(pixels[:, :, 0]))
    return Image.fromarray(np.ascontiguousarray(pixels))


def save_local(options: SaveOptions, slots: Sequence[Slot], parallel: bool = True) -> list[SavedImage]:
    """Saves a node execution in-process. Raises :class:`paths.PathRefused` (writing nothing) for a refused path."""
    return LocalSaver(options).save(slots, parallel=parallel)

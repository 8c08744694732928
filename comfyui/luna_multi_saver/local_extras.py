"""What the daemon adds to a saved image, done by the local save too (issue 16): thumbnails and the batch's ZIP
archive, with the daemon's names, sizes, formats and safety rules, so the fallback (daemon down) gives the same
result. :mod:`.local_save` calls :func:`after_image` for every image it wrote and :func:`after_job` once the
execution's images are all on disk.

- **Thumbnails** (PROTOCOL.md section 12.8, ``src/encode/thumbnail.rs``): ``<image folder>/_thumbnails/<image file
  name>.webp``, the 8-bit image scaled down to fit ``thumbnail_size`` (aspect kept, never enlarged, the daemon's
  rounding, an area average), lossy WebP quality 80, alpha kept; with metadata on, EXIF holding only
  ``source:<image path relative to the output folder>`` (tag 0x010F) and the image's summary (UserComment), never
  the prompt or the workflow. Written atomically and never overwriting (:func:`.paths.write_new_file`). A
  thumbnail that cannot be written leaves a note (``thumbnail not written: ...``); the image stays saved.
- **ZIP archive** (section 12.10, ``src/output/archive.rs``): every image written for the batch (not discarded)
  is added to ``<output>/<batch>.zip`` as a *stored* entry named by its path relative to the output folder with
  ``/``, each name once, ZIP64 where needed. An update never modifies the archive on disk: a complete new archive
  is written to a temp file beside it (the old entries copied, then the new ones), fsynced, renamed over the
  old one, and the directory fsynced, so the name always holds a complete ZIP. The local archive is recognised
  by its comment :func:`archive_token` (``luna-multi-saver local batch <batch>``); a ``<batch>.zip`` that is
  something else (another file, or the daemon's archive of the batch, which only the daemon rewrites) is never
  touched: the first free or own name of ``<batch>_00001.zip``, ``<batch>_00002.zip``, ... is used instead.
  Updates are serialised within the ComfyUI process (one lock); two processes archiving one batch locally at
  the same instant could lose one update's entries (never the archive's validity): not supported.
  Exactly once after a crash: before an update, the images it adds are listed durably in
  ``.luna-archive-<batch>.pending`` beside the archive (temp file, fsync, rename), removed once the new archive
  is renamed into place; the next update of the batch adds what that list still names (a name the archive
  holds is never added twice), so an update killed mid-way loses no image of the batch. An image that can no
  longer be read (removed by hand) is skipped and logged, as the daemon does, so it never blocks the archive.
- **Batch summary**: none is kept locally. The daemon's ``batch_status`` counts the jobs it took; a local save
  is not one of them, and a second record beside the daemon's journal would be a second truth that disagrees
  with it. The node's console line names the batch and what was saved; with ``zip_archive`` the archive lists
  every image.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shutil
import threading
import time
import zipfile
from collections.abc import Sequence

import numpy as np
from PIL import Image

from . import constants, metadata, paths

THUMBNAIL_DIR = constants.THUMBNAIL_DIR
THUMBNAIL_QUALITY = constants.THUMBNAIL_QUALITY
THUMBNAIL_NOTE = "thumbnail not written: "
LOG_PREFIX = "[LunaMultiSaver]"
ARCHIVE_SUFFIX = ".zip"
MAX_COUNTER = 99_999
ZIP64_LIMIT = (1 << 32) - 1
MAX_BATCH_NAME = 100  # src/jobs/batch.rs MAX_BATCH_NAME
BATCH_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_BATCH_NAME - 1}}}")
_ARCHIVE_LOCK = threading.Lock()
_LOG = print  # where a skipped image is reported


def check_options(options) -> None:
    """Refuses, before anything is written, what the daemon refuses as ``invalid_job`` (the same words)."""
    lo, hi = constants.THUMBNAIL_SIZES
    if not lo <= options.thumbnail_size <= hi:
        raise ValueError(f"thumbnail_size {options.thumbnail_size} is outside {lo}..={hi}")


def _checkpoint(point: str) -> None:
    """A named point of an archive update (``archive.writing``, ``archive.before_rename``, ``archive.after_rename``);
    the crash tests replace it to kill the process there (the daemon's ``src/fault.rs`` holds)."""


# -- thumbnails ----------------------------------------------------------------------------------------------------


def thumbnail_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """The daemon's ``thumbnail_dims``: fit ``size`` x ``size``, never enlarged, each side 1..size, rounded half
    away from zero (Rust's ``f64::round``, not Python's ``round``)."""
    if width <= size and height <= size:
        return width, height
    scale = size / max(width, height)
    return tuple(min(max(int(v * scale + 0.5), 1), size) for v in (width, height))


def thumbnail_image(pixels: np.ndarray, size: int) -> Image.Image:
    """The 8-bit ``[H, W, C]`` image scaled down to fit ``size`` (an area average, PIL's BOX filter)."""
    height, width = pixels.shape[:2]
    image = Image.fromarray(np.ascontiguousarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels))
    dims = thumbnail_dims(width, height, size)
    return image if dims == (width, height) else image.resize(dims, Image.Resampling.BOX)


def thumbnail_bytes(pixels: np.ndarray, size: int, facts: metadata.ImageFacts | None, source: str) -> bytes:
    """The thumbnail's WebP: lossy quality 80; with ``facts`` (metadata on) the reference and summary EXIF, first
    in the file as the daemon writes it."""
    image = thumbnail_image(pixels, size)
    out = io.BytesIO()
    if facts is None:
        image.save(out, "WEBP", quality=THUMBNAIL_QUALITY)
        return out.getvalue()
    reference = metadata.JobMetadata(extra_pnginfo=[("source", source)])
    image.save(out, "WEBP", quality=THUMBNAIL_QUALITY, exif=metadata.build_exif(reference, facts))
    return metadata.webp_exif_first(out.getvalue())


def write_thumbnail(
    output_dir: str, image_path: str, pixels: np.ndarray, size: int, facts: metadata.ImageFacts | None
) -> str:
    """Writes the thumbnail of the image saved at ``image_path`` (below ``output_dir``); returns its path."""
    root = os.path.realpath(output_dir)
    folder, name = os.path.split(image_path)
    sub_path = os.path.relpath(folder, root)
    sub_path = "" if sub_path == "." else sub_path.replace(os.sep, "/")
    source = f"{sub_path}/{name}" if sub_path else name
    data = thumbnail_bytes(pixels, size, facts, source)
    directory = paths.resolve_dir(root, f"{sub_path}/{THUMBNAIL_DIR}" if sub_path else THUMBNAIL_DIR)
    return paths.write_new_file(directory, name, "webp", lambda f: f.write(data)).path


def after_image(options, saved, pixels: np.ndarray, facts: metadata.ImageFacts) -> None:
    """:mod:`.local_save`'s hook after one image is durably written (``saved``: its ``SavedImage``)."""
    if not options.thumbnails:
        return
    try:
        saved.thumbnail = write_thumbnail(
            options.output_dir, saved.path, pixels, options.thumbnail_size, facts if options.embed_metadata else None
        )
    except (OSError, ValueError) as e:  # paths.PathRefused is a ValueError: a name too long, disk full, ...
        saved.notes.append(f"{THUMBNAIL_NOTE}{e}")


# -- the batch's ZIP archive ---------------------------------------------------------------------------------------


def archive_token(batch: str) -> str:
    """The ZIP comment that marks the local archive of ``batch`` (the daemon's is ``luna-daemon batch ...``)."""
    return f"luna-multi-saver local batch {batch}"


def entry_name(root: str, path: str) -> str:
    """An image's entry name: its path relative to the archive's folder, with ``/``."""
    return os.path.relpath(os.path.realpath(path), root).replace(os.sep, "/")


def _own_archive(path: str, token: str) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return z.comment == token.encode()
    except (OSError, zipfile.BadZipFile):
        return False


def check_batch_name(batch: str) -> None:
    """The daemon's batch-name rules (``src/jobs/batch.rs``), as a :class:`.paths.PathRefused` saying why."""
    paths.check_stem(batch, "batch_name")
    if not BATCH_NAME.fullmatch(batch):
        raise paths.PathRefused(
            f"batch_name {batch!r} is not allowed: a batch name is 1 to {MAX_BATCH_NAME} of A-Z a-z 0-9 _ - . "
            "starting with a letter or digit"
        )


def find_archive(root: str, batch: str) -> tuple[str, bool]:
    """The batch's local archive in ``root``: ``(name, exists)``, the first of ``<batch>.zip``,
    ``<batch>_00001.zip``, ... that is free or holds this batch's local archive."""
    check_batch_name(batch)
    token = archive_token(batch)
    for counter in range(MAX_COUNTER + 1):
        name = f"{batch}{ARCHIVE_SUFFIX}" if counter == 0 else f"{batch}_{counter:05d}{ARCHIVE_SUFFIX}"
        path = os.path.join(root, name)
        if not os.path.lexists(path):
            return name, False
        if os.path.isfile(path) and not os.path.islink(path) and _own_archive(path, token):
            return name, True
    raise FileExistsError(f"no free archive name for batch {batch!r} in {root} (counter exhausted)")


def _zip_now() -> tuple[int, int, int, int, int, int]:
    now = time.localtime()
    return (
        min(max(now.tm_year, 1980), 2107),
        now.tm_mon,
        now.tm_mday,
        now.tm_hour,
        now.tm_min,
        min(now.tm_sec, 59) // 2 * 2,
    )


def update_archive(output_dir: str, batch: str, files: Sequence[str]) -> tuple[str, int]:
    """Adds ``files`` (images below ``output_dir``) to the batch's local archive, as the module docs say. Returns
    the archive's path and how many entries were added (names the archive holds already are skipped). The
    archive on disk is left as it was if anything fails."""
    root = os.path.realpath(output_dir)
    token = archive_token(batch)
    with _ARCHIVE_LOCK:
        name, exists = find_archive(root, batch)
        final = os.path.join(root, name)
        # The images still to archive, durable before the update starts: one killed mid-way is redone next time.
        pending = pending_path(root, batch)
        files = list(dict.fromkeys([*_read_pending(pending), *files]))
        _write_file(pending, json.dumps(files).encode())
        temp = os.path.join(root, f"{paths.TEMP_PREFIX}{secrets.token_hex(8)}{paths.TEMP_SUFFIX}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(temp, flags, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                added = _write_archive(f, final if exists else None, root, files, token)
                f.flush()
                os.fsync(f.fileno())
            _checkpoint("archive.before_rename")
            if exists:
                os.replace(temp, final)
            elif not paths.publish(temp, final):
                raise FileExistsError(f"archive name {final} was taken meanwhile; the next save picks another")
            paths.fsync_dir(root)
            _checkpoint("archive.after_rename")
            os.unlink(pending)
            paths.fsync_dir(root)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    return final, added


def pending_path(root: str, batch: str) -> str:
    """The batch's list of images not yet in its local archive (hidden, beside it; not a temp file the daemon's
    janitor would remove)."""
    return os.path.join(root, f"{paths.TEMP_PREFIX}archive-{batch}.pending")


def _read_pending(path: str) -> list[str]:
    try:
        with open(path, "rb") as f:
            files = json.loads(f.read())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):  # unreadable: the images it named are saved, only not archived; start anew
        return []
    return [p for p in files if isinstance(p, str)] if isinstance(files, list) else []


def _write_file(path: str, data: bytes) -> None:
    """``path`` replaced atomically by ``data`` (temp file, fsync, rename, directory fsync)."""
    folder = os.path.dirname(path)
    temp = os.path.join(folder, f"{paths.TEMP_PREFIX}{secrets.token_hex(8)}{paths.TEMP_SUFFIX}")
    try:
        with open(temp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
        paths.fsync_dir(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _write_archive(out, old_path: str | None, root: str, files: Sequence[str], token: str) -> int:
    names: set[str] = set()
    added = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as new:
        if old_path is not None:
            with zipfile.ZipFile(old_path) as old:
                for info in old.infolist():
                    names.add(info.filename)
                    with old.open(info) as src, new.open(info, "w", force_zip64=info.file_size > ZIP64_LIMIT) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        for path in files:
            entry = entry_name(root, path)
            if entry in names:
                continue
            names.add(entry)
            info = zipfile.ZipInfo(entry, date_time=_zip_now())
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            try:
                src = open(path, "rb")  # noqa: SIM115 - closed below, after the entry is written
            except OSError as e:  # removed by hand meanwhile (skipped, as the daemon does), or unreadable
                names.discard(entry)
                _LOG(f"{LOG_PREFIX} {path} is not added to the archive: {e}")
                continue
            with src, new.open(info, "w", force_zip64=os.fstat(src.fileno()).st_size > ZIP64_LIMIT) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            added += 1
            _checkpoint("archive.writing")
        new.comment = token.encode()
    return added


def after_job(options, saved: Sequence, log=print) -> str | None:
    """:mod:`.local_save`'s hook once every image of the execution is on disk: the archive update (with
    ``zip`` and a ``batch``). Returns (and logs) what happened. An archive that cannot be updated is logged and
    left as it was; the images stay saved, listed as pending, and the next update of the batch adds them."""
    if not (options.zip and options.batch):
        return None
    files = [image.path for image in saved if not image.discarded]
    if not files:
        return None
    try:
        path, added = update_archive(options.output_dir, options.batch, files)
        line = f"{LOG_PREFIX} Batch {options.batch}: {added} image(s) added to {path}"
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        line = f"{LOG_PREFIX} Batch {options.batch}: archive not updated ({type(e).__name__}: {e}); images saved"
    log(line)
    return line

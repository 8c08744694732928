"""The Luna Multi Saver node (SPEC section 3).

daemon_save OFF saves in-process (:mod:`.local_save`). daemon_save ON copies every image of the execution into a
warm shared-memory segment, submits ONE job to luna-daemon and returns at once with small previews written to
ComfyUI's temp folder; if the daemon is unreachable or busy, the node says why and saves locally. A job the daemon
refuses as invalid is not retried locally when the local save would refuse it too: the node fails with "the daemon
refused the job: <reason>". When ComfyUI loads the pack, a background thread connects to a running daemon and
prepares a segment (:func:`start_prewarm`), so the first execution is as fast as later ones.
An image is never dropped; it is saved twice only if the daemon took a job and then died before confirming it
(the node cannot know whether the daemon will finish it, so it saves locally as well and says so).

With the ``autostart_daemon`` input on (the default; ``LUNA_DAEMON_AUTOSTART=0`` overrides it) and no daemon
answering, the node first starts one (:mod:`.autostart`: detached, it outlives ComfyUI) and submits to it; only if
that fails does it save locally, with the same message and the reason.

Nothing here imports torch or ComfyUI at module import time: ``folder_paths`` and ``comfy.cli_args`` are imported
when the node runs, and tensors are read through duck typing (``.detach().cpu().numpy()``).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import os
import secrets
import threading

import numpy as np
from PIL import Image

from . import autostart, constants, local_save, shm, templates, ui_bridge
from . import client as daemon
from .metadata import JobMetadata
from .pixels import images_of, to_uint8

LOG_PREFIX = "[LunaMultiSaver]"
FALLBACK_MESSAGE = "[LunaMultiSaver] Daemon save selected but daemon not available..."
DEFAULT_FILENAME = "%time:YYYY_mm_dd.HH.MM.SS%_%model_name%"
AFFIX_DEFAULTS = ("ORIG", "UPSCALED", "DETAILED", "FINAL", "IMAGE5")
# New formats are appended, so workflows saved with earlier versions keep their choices.
FORMATS = ["png", "webp", "jpeg", "no save", "exr", "avif", "jxl"]
PNG_BIT_DEPTHS = {"8-bit": 8, "16-bit": 16}
EXR_BIT_DEPTHS = {"32-bit float": 32, "16-bit half": 16}
EXR_COLOR_SPACES = {"sRGB": "srgb", "linear": "linear"}
AVIF_BIT_DEPTHS = {"10-bit": 10, "8-bit": 8}
JXL_BIT_DEPTHS = {"8-bit": 8, "16-bit": 16}
SLOTS = 5
CLIENT_NAME = "comfyui-luna-multi-saver/0.1.0"
PREVIEW_MAX_SIDE = 256
PREVIEW_QUALITY = 85
# How long the node waits for a daemon reply before it saves locally ($LUNA_DAEMON_TIMEOUT overrides).
DEFAULT_TIMEOUT_S = 30.0


def submitted_message(images: int, job_id: str) -> str:
    return f"{LOG_PREFIX} Submitted {images} images to daemon (Job ID: {job_id})"


def refused_message(reason: str) -> str:
    return f"the daemon refused the job: {reason}"


def fallback_message(reason: str) -> str:
    return f"{FALLBACK_MESSAGE} saving locally instead. Reason: {reason}"


def _metadata_disabled() -> bool:
    """ComfyUI's ``--disable-metadata``, when ComfyUI is there."""
    try:
        from comfy.cli_args import args
    except ImportError:
        return False
    return bool(getattr(args, "disable_metadata", False))


def _output_directory() -> str:
    import folder_paths

    return os.path.abspath(folder_paths.get_output_directory())


def _temp_directory() -> str:
    import folder_paths

    return os.path.abspath(folder_paths.get_temp_directory())


class _DaemonClients:
    """One warm client per socket, kept across executions (connection and segments stay warm)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._clients: dict[str, daemon.Client] = {}

    def submit(self, socket_path: str, options: daemon.JobOptions, slots, meta) -> daemon.Accepted:
        """``meta`` is the wire metadata, or a function choosing it from the daemon's announced ``features``."""
        with self._lock:
            client = self._client(socket_path)
            if callable(meta):
                meta = meta(client.welcome.get("features") or [])
            return client.submit(options, slots, metadata=meta)

    def _client(self, socket_path: str) -> daemon.Client:
        """The warm client for ``socket_path``, connecting on first use. The caller holds the lock."""
        client = self._clients.get(socket_path)
        if client is None:
            timeout = float(os.environ.get("LUNA_DAEMON_TIMEOUT", DEFAULT_TIMEOUT_S))
            client = daemon.Client.connect(socket_path, CLIENT_NAME, timeout=timeout)
            self._clients[socket_path] = client
        return client

    def prewarm(self, socket_path: str, nbytes: int) -> bool:
        """Connects to a daemon that already runs and prepares one segment of ``nbytes`` with its pages touched,
        so the first execution costs what later ones do. Never starts a daemon; False if none answers."""
        with self._lock:
            try:
                client = self._client(socket_path)
            except daemon.ClientError:
                return False
            if client.pool is not None and not len(client.pool):
                segment = client.pool.acquire(nbytes)
                segment.array(shm.HEADER_LEN, (segment.capacity,), "uint8").fill(
                    0
                )  # fault the pages in now, not in the copy
            return True

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


DAEMON_CLIENTS = _DaemonClients()
atexit.register(DAEMON_CLIENTS.close)

# What the background warm-up prepares: four 1024x1024 RGB float32 images, ComfyUI's common batch (48 MiB).
PREWARM_BYTES = 4 * 1024 * 1024 * 3 * 4
PREWARM_SWITCH = "LUNA_DAEMON_PREWARM"


def start_prewarm() -> threading.Thread | None:
    """Called when ComfyUI loads the pack: warms the connection and one segment on a background thread, so
    ComfyUI's start is not delayed and the first daemon execution is as fast as later ones. A daemon that is not
    running is not started (that waits for a node with daemon_save on); ``LUNA_DAEMON_PREWARM=0`` switches it off."""
    if os.environ.get(PREWARM_SWITCH, "").strip().lower() in {"0", "false", "no", "off"}:
        return None

    def warm() -> None:
        try:
            DAEMON_CLIENTS.prewarm(daemon.default_socket(), PREWARM_BYTES)
        except Exception as e:  # noqa: BLE001 - a failed warm-up only means the first execution connects itself
            print(f"{LOG_PREFIX} Could not prepare the daemon connection: {e}")

    thread = threading.Thread(target=warm, name="luna-prewarm", daemon=True)
    thread.start()
    return thread


def _job_default(name: str):
    """A job option's default, from constants.json (the one place it is written)."""
    return next(o.default for o in constants.JOB_OPTIONS if o.name == name)


def _tip(text: str) -> dict:
    return {"tooltip": text}


class LunaMultiSaver:
    """Saves up to five image inputs with per-input affix, format and sub-folder, locally or through luna-daemon."""

    CATEGORY = "Luna/Image"
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    DESCRIPTION = (
        "Saves up to five images (PNG/WebP/JPEG) with templates and quality gates; optionally via luna-daemon."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        optional: dict = {
            "model_name": (
                "STRING",
                {"default": "", **_tip("(Deprecated) Model name, used when no metadata input gives one.")},
            ),
        }
        for i in range(1, SLOTS + 1):
            optional[f"image_{i}"] = ("IMAGE", _tip(f"Image input {i}"))
        for i, affix in enumerate(AFFIX_DEFAULTS, start=1):
            optional[f"affix_{i}"] = ("STRING", {"default": affix, **_tip(f"Affix (and sub-folder) for image_{i}")})
        for i in range(1, SLOTS + 1):
            optional[f"format_{i}"] = (
                FORMATS,
                {"default": "webp", **_tip(f"Format for image_{i}; 'no save' skips it")},
            )
        for i in range(1, SLOTS + 1):
            optional[f"subdir_{i}"] = (
                "BOOLEAN",
                {"default": True, "label_on": "Subdir", "label_off": "Root", **_tip(f"Save image_{i} under <affix>/")},
            )
        optional.update(
            {
                "png_compression": ("INT", {"default": 4, "min": 0, "max": 9, **_tip("PNG level 0-9; same pixels")}),
                "lossy_quality": ("INT", {"default": 90, "min": 70, "max": 100, **_tip("JPEG and lossy WebP quality")}),
                "lossless_webp": (
                    "BOOLEAN",
                    {"default": False, "label_on": "Lossless", "label_off": "Lossy", **_tip("Lossless WebP")},
                ),
                "embed_workflow": (
                    "BOOLEAN",
                    {"default": True, "label_on": "Embed", "label_off": "Skip", **_tip("Embed workflow metadata")},
                ),
                "filename_index": ("INT", {"default": 0, "min": 0, "max": 10000, **_tip("Value of %index%")}),
                "custom_metadata": ("STRING", {"default": "", "multiline": True, **_tip("Text added to all images")}),
                "metadata": ("METADATA", _tip("Metadata dict from a parameters loader (overrides custom_metadata)")),
                # New inputs go here, after every original one, so saved workflows keep their widget values.
                "autostart_daemon": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "label_on": "Auto-start",
                        "label_off": "Off",
                        **_tip(
                            "With daemon_save on and no daemon running, start luna-daemon (detached; it keeps running "
                            "after ComfyUI exits). LUNA_DAEMON_AUTOSTART=0 turns this off everywhere."
                        ),
                    },
                ),
                "batch_name": (
                    "STRING",
                    {
                        "default": "",
                        **_tip(
                            "Daemon mode: group this execution's images with others under this batch name "
                            "(`luna-daemon status --batch NAME`). Letters, digits, _ - . only. Empty = no batch."
                        ),
                    },
                ),
                "thumbnails": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "label_on": "Thumbnails",
                        "label_off": "None",
                        **_tip(
                            "Also write a small WebP of each image into _thumbnails/ beside it (daemon mode: the node "
                            "previews it; history keeps the full file)."
                        ),
                    },
                ),
                "thumbnail_size": (
                    "INT",
                    {"default": 256, "min": 16, "max": 1024, **_tip("Largest side of the thumbnails, in pixels")},
                ),
                "output_root": (
                    "STRING",
                    {
                        "default": "",
                        **_tip(
                            "Daemon mode: s3://bucket/prefix saves to S3-compatible object storage (endpoint and "
                            "credentials are the daemon's). Empty = ComfyUI's output folder, which a local save "
                            "always uses."
                        ),
                    },
                ),
                "zip_archive": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "label_on": "ZIP",
                        "label_off": "No ZIP",
                        **_tip(
                            "With a batch_name: also add every image to <batch_name>.zip in the output (a local "
                            "save uses an archive of its own beside the daemon's)."
                        ),
                    },
                ),
                "png_bit_depth": (
                    list(PNG_BIT_DEPTHS),
                    {"default": "8-bit", **_tip("PNG bits per sample; 16-bit is made from the float pixels")},
                ),
                "exr_bit_depth": (
                    list(EXR_BIT_DEPTHS),
                    {"default": "32-bit float", **_tip("EXR samples: 32-bit float or 16-bit half")},
                ),
                "exr_color_space": (
                    list(EXR_COLOR_SPACES),
                    {
                        "default": "sRGB",
                        **_tip("Colour space of the input: sRGB is linearised for EXR; linear is written as is"),
                    },
                ),
                "avif_quality": (
                    "INT",
                    {
                        "default": _job_default("avif_quality"),
                        "min": 1,
                        "max": 100,
                        **_tip("AVIF quality; 100 is best"),
                    },
                ),
                "avif_speed": (
                    "INT",
                    {
                        "default": _job_default("avif_speed"),
                        "min": 1,
                        "max": 10,
                        **_tip("AVIF encoder speed: 1 is slowest (smallest files), 10 fastest"),
                    },
                ),
                "avif_bit_depth": (
                    list(AVIF_BIT_DEPTHS),
                    {
                        "default": "10-bit",
                        **_tip("AVIF bits per sample; 10-bit is made from the float pixels (the daemon's; local is 8)"),
                    },
                ),
                "jxl_bit_depth": (
                    list(JXL_BIT_DEPTHS),
                    {
                        "default": "8-bit",
                        **_tip(
                            "JPEG XL bits per sample (always lossless); 16-bit is made from the float pixels and "
                            "needs the daemon (a local save writes a 16-bit PNG instead)"
                        ),
                    },
                ),
            }
        )
        return {
            "required": {
                "save_path": (
                    "STRING",
                    {
                        "default": "",
                        **_tip(
                            "Folder relative to the output directory. Templates: %model_path%, %model_name%, "
                            "%model_dir%, %index%, %time:YYYY-mm-dd%, %date:yyyy-MM-dd%. Empty = output root."
                        ),
                    },
                ),
                "filename": (
                    "STRING",
                    {"default": DEFAULT_FILENAME, **_tip("File name template; _<affix> is always appended.")},
                ),
                "daemon_save": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "label_on": "Async (Daemon)",
                        "label_off": "Blocking",
                        **_tip("Hand the images to luna-daemon and return at once (falls back to a local save)."),
                    },
                ),
                "save_mode": (["parallel", "sequential"], {"default": "parallel", **_tip("How local saves run")}),
                "quality_gate": (
                    ["disabled", "variance", "edge_density", "both"],
                    {"default": "disabled", **_tip("Failing images are saved under _discarded")},
                ),
                "min_quality_threshold": (
                    "FLOAT",
                    {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.05, **_tip("Minimum gate score")},
                ),
            },
            "optional": optional,
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def __init__(self):
        self.last_job: daemon.Accepted | None = None
        self.last_saved: list[local_save.SavedImage] = []
        self.last_started: autostart.Started | None = None

    def save_images(self, **inputs) -> dict:
        """ComfyUI passes every input by name; anything missing takes the default :meth:`INPUT_TYPES` declares."""
        v = {**input_defaults(), **inputs}
        timestamp = templates.Timestamp.now()
        self.last_job = None
        self.last_saved = []
        self.last_started = None
        slots = []
        for i in range(1, SLOTS + 1):
            image, affix, fmt, subdir = (v.get(f"{name}_{i}") for name in ("image", "affix", "format", "subdir"))
            if image is None:
                continue
            if fmt == "no save":
                print(f"{LOG_PREFIX} Skipping {affix} - format set to 'no save'")
                continue
            slots.append(local_save.Slot(images=image, affix=affix or "", format=fmt, subdir=bool(subdir)))
        if not slots:
            print(f"{LOG_PREFIX} No images to save")
            return {"ui": {"images": []}}

        embed = bool(v["embed_workflow"]) and not _metadata_disabled()
        if v["zip_archive"] and not (v["batch_name"] or "").strip():
            print(f"{LOG_PREFIX} zip_archive needs a batch_name (the archive is <batch_name>.zip): no archive")
        metadata_inputs = (v.get("prompt"), v.get("extra_pnginfo"), v.get("metadata"), v["custom_metadata"])

        def text_metadata() -> JobMetadata:
            # json.dumps of the prompt and workflow: only the local save needs it here (the daemon gets the values).
            return JobMetadata.from_inputs(*metadata_inputs) if embed else JobMetadata()

        options = local_save.SaveOptions(
            output_dir=_output_directory(),
            save_path=v["save_path"] or "",
            filename=v["filename"] or "",
            model_name=templates.model_name_source(v.get("metadata"), v["model_name"]),
            filename_index=int(v["filename_index"]),
            timestamp=timestamp,
            png_compression=int(v["png_compression"]),
            lossy_quality=int(v["lossy_quality"]),
            lossless_webp=bool(v["lossless_webp"]),
            png_bit_depth=PNG_BIT_DEPTHS[v["png_bit_depth"]],
            exr_bit_depth=EXR_BIT_DEPTHS[v["exr_bit_depth"]],
            exr_input_color_space=EXR_COLOR_SPACES[v["exr_color_space"]],
            avif_quality=int(v["avif_quality"]),
            avif_speed=int(v["avif_speed"]),
            avif_bit_depth=AVIF_BIT_DEPTHS[v["avif_bit_depth"]],
            jxl_bit_depth=JXL_BIT_DEPTHS[v["jxl_bit_depth"]],
            quality_gate=v["quality_gate"],
            min_quality_threshold=float(v["min_quality_threshold"]),
            embed_metadata=embed,
            metadata=JobMetadata(),
            batch=(v["batch_name"] or "").strip() or None,
            thumbnails=bool(v["thumbnails"]),
            thumbnail_size=int(v["thumbnail_size"]),
            zip=bool(v["zip_archive"]) and bool((v["batch_name"] or "").strip()),
        )
        root = object_root(v["output_root"])
        if v["daemon_save"]:
            values = JobMetadata.wire_values(*metadata_inputs) if embed else None
            job = dataclasses.replace(options, output_dir=root) if root else options
            result = self._via_daemon(
                job, slots, autostart.enabled(v["autostart_daemon"]), values, text_metadata, local=options
            )
            if result is not None:
                return result
        if root:
            print(f"{LOG_PREFIX} {root} needs the daemon (daemon_save on); saving locally to {options.output_dir}")
        options = dataclasses.replace(options, metadata=text_metadata())
        saved = local_save.save_local(options, slots, parallel=v["save_mode"] != "sequential")
        self.last_saved = saved
        for image in saved:
            if image.discarded:
                print(
                    f"{LOG_PREFIX} Discarded {slots[image.slot].affix} #{image.batch_index} - quality check failed "
                    f"({image.gate.describe()}, threshold={options.min_quality_threshold}); saved as {image.path}"
                )
            for note in image.notes:
                print(f"{LOG_PREFIX} {image.path}: {note}")
        return {"ui": {"images": [image.ui() for image in saved]}}

    def _via_daemon(
        self,
        options: local_save.SaveOptions,
        slots: list[local_save.Slot],
        autostart_daemon: bool = False,
        values: dict | None = None,
        text_metadata=None,
        local: local_save.SaveOptions | None = None,
    ) -> dict | None:
        """Submits the execution as one job; with ``autostart_daemon``, starts a daemon first if none answers.
        Returns the UI result, or None after printing why the caller must save locally (with ``local``, the
        options of that local save when they differ from the job's, as for an object-storage root)."""
        job = daemon_job_options(options)
        wire_slots = [daemon.SlotImages(s.images, format=s.format, affix=s.affix, subdir=s.subdir) for s in slots]
        meta = values if options.embed_metadata else None

        def choose(features: list) -> dict | None:
            # A daemon that does not announce metadata_values would ignore the values: send it the text.
            if meta is values and meta is not None and "metadata_values" not in features:
                return text_metadata().to_wire()
            return meta

        def submit() -> daemon.Accepted:
            try:
                return DAEMON_CLIENTS.submit(socket_path, job, wire_slots, choose)
            except (TypeError, ValueError, OverflowError, UnicodeEncodeError):
                if meta is not values or meta is None:
                    raise
                # Values MessagePack cannot carry (integers beyond 64 bits, lone surrogates): send the text.
                return DAEMON_CLIENTS.submit(socket_path, job, wire_slots, text_metadata().to_wire())

        socket_path = daemon.default_socket()
        try:
            try:
                accepted = submit()
            except daemon.DaemonUnreachable as e:
                if not autostart_daemon:
                    raise
                try:
                    started = autostart.ensure_daemon(socket_path)
                except autostart.AutostartFailed as why:
                    raise daemon.DaemonUnreachable(f"{e}; auto-start failed: {why}") from why
                self.last_started = started
                if started.pid is not None:
                    log = f", log: {started.log}" if started.log else ""
                    print(f"{LOG_PREFIX} Started luna-daemon (pid {started.pid}{log}) on {socket_path}")
                accepted = submit()
        except daemon.ConnectionLost as e:
            reason = str(e)
            if e.job_may_exist:
                reason += "; the daemon had taken the job, so it may save these images too"
            print(fallback_message(reason))
            return None
        except daemon.DaemonError as e:
            if e.name != "invalid_job":
                print(fallback_message(str(e)))
                return None
            return self._refused(e, local or options, slots)
        except Exception as e:  # noqa: BLE001 - any failure to hand over means a local save, never a loss
            reason = str(e) if isinstance(e, daemon.ClientError) else f"{type(e).__name__}: {e}"
            print(fallback_message(reason))
            return None
        self.last_job = accepted
        print(submitted_message(accepted.images, accepted.job_id))
        ui = {"images": _write_previews(slots, accepted.job_id)}
        # The UI follows the job: its badge, then the real saved files in place of the previews (ui_bridge).
        try:
            pending = ui_bridge.follow(accepted.job_id, accepted.images, [s.affix for s in slots], options.output_dir)
        except Exception as e:  # noqa: BLE001 - the images are with the daemon; not following them is no error
            print(f"{LOG_PREFIX} Cannot follow job {accepted.job_id} in the UI: {type(e).__name__}: {e}")
            pending = None
        if pending is not None:
            ui[ui_bridge.UI_KEY] = [pending]
        return {"ui": ui}

    @staticmethod
    def _refused(e: daemon.DaemonError, options: local_save.SaveOptions, slots: list[local_save.Slot]) -> None:
        """An ``invalid_job`` refusal is no unavailable daemon: the same job would only fail again locally. If the
        local save refuses it too, the node fails with the daemon's reason; if not (a daemon with stricter limits),
        the images are saved locally and the message says why."""
        try:
            local_save.LocalSaver(options).plan(slots)
        except ValueError as local:
            raise JobRefused(refused_message(e.message)) from local
        print(f"{LOG_PREFIX} {refused_message(e.message)}; saving locally instead (the local save accepts it)")


def object_root(value: str | None) -> str | None:
    """The ``output_root`` input: None for ComfyUI's output folder, else an ``s3://bucket/prefix`` root (the
    daemon checks the bucket name and prefix). Anything else is refused: a local save has one place to go."""
    value = (value or "").strip()
    if not value:
        return None
    if not value.startswith("s3://") or len(value) <= len("s3://"):
        raise ValueError(
            f"output_root {value!r} is not an s3://bucket/prefix URL (leave it empty for ComfyUI's output folder)"
        )
    return value


class JobRefused(ValueError):
    """The daemon refused the job as invalid and the local save refuses it too: the node fails with the reason."""


def input_defaults() -> dict:
    """Every input's default, as :meth:`LunaMultiSaver.INPUT_TYPES` declares it (the one place defaults live)."""
    spec = LunaMultiSaver.INPUT_TYPES()
    return {
        name: options[1]["default"]
        for section in ("required", "optional")
        for name, options in spec[section].items()
        if len(options) > 1 and "default" in options[1]
    }


def daemon_job_options(options: local_save.SaveOptions) -> daemon.JobOptions:
    """The protocol's job options for the same settings the local save would use (both are built from the job
    options of constants.json; only the timestamp is carried differently)."""
    shared = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name in _JOB_OPTION_NAMES}
    return daemon.JobOptions(**shared, timestamp_ms=options.timestamp.ms, utc_offset_s=options.timestamp.utc_offset_s)


_JOB_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(daemon.JobOptions)) - {"timestamp_ms", "utc_offset_s"}


# One background thread renders previews, so daemon mode returns as soon as the daemon has the job.
_PREVIEW_WRITER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="luna-previews")
_PENDING_PREVIEWS: list[concurrent.futures.Future] = []


def _write_previews(slots: list[local_save.Slot], job_id: str) -> list[dict]:
    """Small JPEG previews in ComfyUI's temp folder, so the UI shows what was handed to the daemon without waiting
    for the real files. The names are returned at once; the files are rendered on a background thread
    (subsampled before the uint8 conversion, JPEG: about a millisecond per image), which finishes long before the
    UI, told of them after the node returns, asks for them."""
    try:
        temp_dir = _temp_directory()
        tag = "".join(c for c in job_id if c.isalnum())[:16] or secrets.token_hex(6)
        work = []
        for slot in slots:
            for full in images_of(slot.images):
                work.append((full, os.path.join(temp_dir, f"LunaMultiSaver_{tag}_{len(work):03d}.jpg")))
    except Exception as e:  # noqa: BLE001 - the images are with the daemon; a missing preview is no error
        print(f"{LOG_PREFIX} Could not write previews: {e}")
        return []
    _PENDING_PREVIEWS[:] = [f for f in _PENDING_PREVIEWS if not f.done()]
    _PENDING_PREVIEWS.append(_PREVIEW_WRITER.submit(_render_previews, temp_dir, work))
    return [{"filename": os.path.basename(path), "subfolder": "", "type": "temp"} for _, path in work]


def _render_previews(temp_dir: str, work: list) -> None:
    try:
        os.makedirs(temp_dir, exist_ok=True)
        for full, path in work:
            step = max(1, -(-max(full.shape[0], full.shape[1]) // PREVIEW_MAX_SIDE))
            small = to_uint8(np.ascontiguousarray(full[::step, ::step, :3]))
            image = Image.fromarray(small[:, :, 0] if small.shape[2] == 1 else small)
            with open(path, "xb") as f:
                image.save(f, "JPEG", quality=PREVIEW_QUALITY)
    except Exception as e:  # noqa: BLE001 - the images are with the daemon; a missing preview is no error
        print(f"{LOG_PREFIX} Could not write previews: {e}")


def flush_previews() -> None:
    """Waits until every preview handed to the background writer is on disk (tests and benchmarks use this)."""
    for future in list(_PENDING_PREVIEWS):
        future.result()

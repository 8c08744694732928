"""Follows the daemon jobs the node submitted and reports what became of them (issue 13: the UI sees what the
daemon did). Pure logic and one thread; nothing here imports ComfyUI (:mod:`.ui_bridge` is the ComfyUI side).

The node hands every accepted job to :meth:`JobWatcher.watch` and returns. One background thread polls the daemon's
``status`` request (PROTOCOL.md section 7.3: there is no push) for every job still followed, on its own connection:

- **cheap when idle**: with no job to follow the thread waits on a condition without a timeout (no polling at all);
- **no busy polling**: each job is polled with its own back-off, 20 ms doubling to 1 s, so a job that finishes in
  a few milliseconds is seen at once and a long one costs one small request a second;
- **many executions**: every job is followed on its own; the node's images are replaced only by the newest job of
  that node for that browser (an older job finishing late never overwrites a newer execution's images);
- **daemon restarts**: a lost connection is reopened with back-off (up to 5 s); the daemon recovers unfinished
  jobs under the same id, so following simply continues; a job the restarted daemon no longer knows (it finished
  before the restart, finished jobs are not journaled) ends as ``unknown``;
- **bounded**: a job is followed for at most :data:`FOLLOW_LIMIT_S` (the daemon's default ``job_retention``);
  ``retrying`` can last forever (section 8.3), so its error is reported as soon as it appears;
- **ComfyUI shutdown**: the thread is a daemon thread and :meth:`JobWatcher.close` (at exit) ends it; it never
  delays the exit.

Every change of a job is one *event* (:func:`summarize`), given to the sink's ``progress``; once every image is
final the sink's ``finished`` delivers the saved files (it may answer "not yet", e.g. while ComfyUI has not written
the prompt's history entry, and is asked again with the same back-off).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

FIRST_DELAY_S = 0.02
MAX_DELAY_S = 1.0
RECONNECT_MAX_S = 5.0
FOLLOW_LIMIT_S = 3600.0
# The badge's and the panel's states: one per job (per execution of the node).
PENDING, RETRYING, WRITTEN, DISCARDED, FAILED, UNKNOWN, UNFOLLOWED = (
    "pending",
    "retrying",
    "written",
    "discarded",
    "failed",
    "unknown",
    "unfollowed",
)
FINAL_IMAGE_STATES = ("written", "discarded", "failed")
IMAGE_STATES = ("queued", "encoding", "retrying", *FINAL_IMAGE_STATES)


class StatusSource(Protocol):
    """What the watcher needs of a daemon connection (:class:`.client.Client` is one)."""

    def status(self, job_id: str) -> dict: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Where events go (:class:`.ui_bridge.ComfySink` sends them to ComfyUI's frontend)."""

    def progress(self, job: WatchedJob, event: dict) -> None: ...

    def finished(self, job: WatchedJob, event: dict, newest: bool) -> bool:
        """Delivers a final event (``newest``: no later job of the same node and browser exists). False means
        "try again later"."""
        ...


@dataclass
class WatchedJob:
    """One accepted job and whom to tell about it."""

    job_id: str
    node: str  # the node's execution id (``unique_id``)
    display_node: str
    prompt_id: str | None
    client_id: str | None  # the browser that queued the prompt (ComfyUI's sid); None: tell nobody, patch history
    output_dir: str
    affixes: list[str]  # per submitted slot
    images: int = 0
    # Kept by the watcher:
    started: float = 0.0
    due: float = 0.0
    delay: float = FIRST_DELAY_S
    last_event: dict | None = None
    final_event: dict | None = None
    unreachable: str | None = field(default=None, repr=False)


def ui_image(path: str | None, output_dir: str) -> dict | None:
    """ComfyUI's ``/view`` reference (``filename``, ``subfolder``, ``type: output``) for a file the daemon wrote
    under ``output_dir``; None when it is elsewhere. The daemon reports paths with symlinks resolved."""
    if not path:
        return None
    root = os.path.realpath(output_dir)
    full = os.path.realpath(path)
    if os.path.commonpath([root, full]) != root or full == root:
        return None
    rel = os.path.relpath(full, root)
    subfolder, filename = os.path.split(rel)
    return {"filename": filename, "subfolder": subfolder.replace(os.sep, "/"), "type": "output"}


def _error_text(error: dict | None) -> str | None:
    if not error:
        return None
    return str(error.get("message") or error.get("name") or error.get("code"))


def _gate_text(scores: dict | None) -> str | None:
    if not scores:
        return None
    parts = [f"{k}={v:.3f}" for k, v in scores.items() if isinstance(v, (int, float))]
    return ", ".join(parts) or None


def summarize(job: WatchedJob, status: dict) -> dict:
    """The event for one ``status`` reply: the job's state for the badge, per-state counts, and per image its
    state, its file and its thumbnail (``/view`` references) once written or discarded, its error and its notes."""
    counts = dict.fromkeys(IMAGE_STATES, 0)
    images = []
    for image in status.get("images") or []:
        state = str(image.get("state"))
        counts[state] = counts.get(state, 0) + 1
        slot = int(image.get("slot", 0))
        affix = job.affixes[slot] if slot < len(job.affixes) else f"slot {slot + 1}"
        final_file = state in ("written", "discarded")
        entry = {
            "index": int(image.get("index", len(images))),
            "label": f"{affix} #{int(image.get('batch_index', 0))}",
            "state": state,
            "file": ui_image(image.get("path"), job.output_dir) if final_file else None,
            # The daemon's small WebP of the file (PROTOCOL.md section 12.8), when the job asked for thumbnails.
            "thumbnail": ui_image(image.get("thumbnail"), job.output_dir) if final_file else None,
            "error": _error_text(image.get("error")),
            "scores": _gate_text(image.get("scores")),
            "notes": list(image.get("notes") or []),
        }
        images.append(entry)
    finished = bool(status.get("finished"))
    if not finished:
        state = RETRYING if counts["retrying"] else PENDING
    elif counts["failed"]:
        state = FAILED
    elif images and counts["discarded"] == len(images):
        state = DISCARDED
    else:
        state = WRITTEN
    return _event(job, state, finished, counts, images, _message(state, counts, images))


def _message(state: str, counts: dict, images: list[dict]) -> str:
    total = len(images)
    done = sum(counts[s] for s in FINAL_IMAGE_STATES)
    parts = []
    if state in (PENDING, RETRYING):
        parts.append(f"saving {done}/{total}")
    else:
        parts.append(f"{counts['written']}/{total} written")
    if counts["discarded"]:
        parts.append(f"{counts['discarded']} discarded")
    if counts["failed"]:
        parts.append(f"{counts['failed']} failed")
    for image in images:
        if image["state"] in ("failed", "retrying") and image["error"]:
            verb = "failed" if image["state"] == "failed" else "retrying"
            parts.append(f"{image['label']} {verb}: {image['error']}")
            break
    return ", ".join(parts)


def _event(job: WatchedJob, state: str, finished: bool, counts: dict, images: list, message: str) -> dict:
    return {
        "job_id": job.job_id,
        "node": job.node,
        "display_node": job.display_node,
        "prompt_id": job.prompt_id,
        "state": state,
        "finished": finished,
        "counts": counts,
        "images": images,
        "message": message,
    }


def pending_event(job: WatchedJob) -> dict:
    """The event before the first status: every image queued (what the node returns with its previews)."""
    counts = dict.fromkeys(IMAGE_STATES, 0)
    counts["queued"] = job.images
    return _event(job, PENDING, False, counts, [], f"saving 0/{job.images}")


def _lost_event(job: WatchedJob, state: str, message: str) -> dict:
    base = job.last_event or pending_event(job)
    return {**base, "state": state, "finished": True, "message": message}


class JobWatcher:
    """Follows jobs on one background thread (started with the first :meth:`watch`); see the module docs."""

    def __init__(
        self,
        connect: Callable[[], StatusSource],
        sink: Sink,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = print,
        is_unknown_job: Callable[[Exception], bool] = lambda e: False,
    ):
        self._connect = connect
        self._sink = sink
        self._clock = clock
        self._log = log
        self._is_unknown_job = is_unknown_job
        self._cond = threading.Condition()
        self._jobs: dict[str, WatchedJob] = {}
        self._newest: dict[tuple, str] = {}
        self._source: StatusSource | None = None
        self._reconnect_delay = FIRST_DELAY_S
        self._reconnect_due = 0.0
        self._connect_error: str | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- the node's side ------------------------------------------------------------------------------------------

    def watch(self, job: WatchedJob) -> None:
        now = self._clock()
        job.started, job.due, job.delay = now, now + FIRST_DELAY_S, FIRST_DELAY_S
        with self._cond:
            if self._closed:
                return
            self._jobs[job.job_id] = job
            self._newest[(job.client_id, job.node)] = job.job_id
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="luna-job-watcher", daemon=True)
                self._thread.start()
            self._cond.notify()

    def followed(self) -> list[str]:
        with self._cond:
            return list(self._jobs)

    def close(self, timeout: float | None = 1.0) -> None:
        """Stops following (at ComfyUI's exit): the thread ends after its current request at the latest."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._drop_source()

    # -- the thread -------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._jobs:
                    self._cond.wait()  # idle: no timeout, no polling
                if self._closed:
                    return
                now = self._clock()
                due = min(j.due for j in self._jobs.values())
                if due > now:
                    self._cond.wait(due - now)
                    continue
            try:
                self.poll_due(now)
            except Exception as e:  # noqa: BLE001 - the watcher must outlive any one bad reply or sink
                self._log(f"[LunaMultiSaver] job watcher: {type(e).__name__}: {e}")

    def poll_due(self, now: float) -> None:
        """One round: every job whose time has come is polled (the thread's step; tests call it directly)."""
        with self._cond:
            due = sorted((j for j in self._jobs.values() if j.due <= now), key=lambda j: j.due)
        for job in due:
            if job.final_event is not None:
                self._deliver(job, job.final_event, now)
                continue
            if now - job.started > FOLLOW_LIMIT_S:
                event = _lost_event(job, UNFOLLOWED, f"no longer followed after {FOLLOW_LIMIT_S:.0f} s")
                self._progress(job, event)
                self._forget(job)
                continue
            source = self._source_or_none(now)
            if source is None:
                self._unreachable(due, now, self._connect_error)
                return
            try:
                status = source.status(job.job_id)
            except Exception as e:  # noqa: BLE001 - classified below: unknown job, or a connection to reopen
                if self._is_unknown_job(e):
                    msg = "the daemon no longer knows this job (it restarted or the job expired); check the folder"
                    self._progress(job, _lost_event(job, UNKNOWN, msg))
                    self._forget(job)
                    continue
                self._drop_source()
                self._reconnect_due = now
                self._unreachable(due, now, str(e))
                return
            job.unreachable = None
            event = summarize(job, status)
            if event != job.last_event:
                self._progress(job, event)
            if event["finished"]:
                job.final_event = event
                self._deliver(job, event, now)
            else:
                self._back_off(job, now)

    def _deliver(self, job: WatchedJob, event: dict, now: float) -> None:
        with self._cond:
            newest = self._newest.get((job.client_id, job.node)) == job.job_id
        try:
            done = self._sink.finished(job, event, newest)
        except Exception as e:  # noqa: BLE001 - a sink failure ends the job's delivery, never the thread
            self._log(f"[LunaMultiSaver] could not show job {job.job_id}'s files: {type(e).__name__}: {e}")
            done = True
        if done:
            self._forget(job)
        else:
            self._back_off(job, now)

    def _progress(self, job: WatchedJob, event: dict) -> None:
        job.last_event = event
        try:
            self._sink.progress(job, event)
        except Exception as e:  # noqa: BLE001 - a sink failure must not stop following
            self._log(f"[LunaMultiSaver] could not report job {job.job_id}: {type(e).__name__}: {e}")

    def _unreachable(self, jobs: list[WatchedJob], now: float, why: str | None = None) -> None:
        """The daemon does not answer: every due job waits for the next reconnect; the UI is told once."""
        for job in jobs:
            job.due = max(job.due, self._reconnect_due)
            if why and job.unreachable != why and job.final_event is None:
                job.unreachable = why
                base = job.last_event or pending_event(job)
                self._progress(job, {**base, "message": f"{base['message']}; daemon not answering: {why}"})

    def _source_or_none(self, now: float) -> StatusSource | None:
        if self._source is not None:
            return self._source
        if now < self._reconnect_due:
            return None
        try:
            self._source = self._connect()
            self._reconnect_delay = FIRST_DELAY_S
        except Exception as e:  # noqa: BLE001 - not answering now; tried again with back-off
            self._connect_error = str(e)
            self._reconnect_due = now + self._reconnect_delay
            self._reconnect_delay = min(self._reconnect_delay * 2, RECONNECT_MAX_S)
            return None
        return self._source

    def _drop_source(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail; it is gone either way
                source.close()

    def _back_off(self, job: WatchedJob, now: float) -> None:
        job.due = now + job.delay
        job.delay = min(job.delay * 2, MAX_DELAY_S)

    def _forget(self, job: WatchedJob) -> None:
        with self._cond:
            self._jobs.pop(job.job_id, None)
            key = (job.client_id, job.node)
            if self._newest.get(key) == job.job_id and not any(
                (j.client_id, j.node) == key for j in self._jobs.values()
            ):
                del self._newest[key]

"""The ComfyUI side of following daemon jobs (:mod:`.watcher` is the logic): who ran the node, and how the
frontend and ComfyUI's history learn what the daemon did.

- While a job runs, every change is pushed to the browser that queued the prompt as a websocket message
  :data:`EVENT` (``PromptServer.send_sync``, thread-safe), which the pack's frontend extension
  (``web/luna_multi_saver.js``) shows as a badge on the node and a row in a small panel; a failed save is also a
  toast there and a line in ComfyUI's console.
- When every image is final, the node's ``executed`` message is sent again with the real saved files (``type:
  output``, served by ``/view``) instead of the temp previews, so the node's images become the saved files, and
  the prompt's history entry is updated the same way (the temp folder is deleted when ComfyUI starts; history
  then still points at real files). Per-image states (written, discarded, failed) ride along under
  :data:`UI_KEY`, which the extension uses to mark discarded and failed images.
- With thumbnails (the daemon wrote ``_thumbnails/<name>.webp``, PROTOCOL.md section 12.8), the node's preview
  shows the thumbnail (a few KB to load instead of the full file), while everything that stands for the image
  itself points at the full file: the history entry (the queue panel, its lightbox, reloading a past prompt, the
  API's ``/history``), and the node's *Open Image* / *Save Image* menu entries (the extension maps the thumbnail
  back to its file). Saving or opening the preview therefore gives the real image, with its workflow.

Only the newest job of a node (per browser) replaces the node's images; ComfyUI is imported lazily, so without
ComfyUI (the stand-in tests) :func:`current_context` is None and nothing is followed.
"""

from __future__ import annotations

import atexit
import threading
from collections import OrderedDict
from dataclasses import dataclass

from . import client as daemon
from .watcher import JobWatcher, WatchedJob, pending_event

LOG_PREFIX = "[LunaMultiSaver]"
# The websocket message type (web/luna_multi_saver.js listens for the same name).
EVENT = "luna-multi-saver.job"
# The key of the node's UI output that carries the job's events.
UI_KEY = "luna_multi_saver"
WATCHER_CLIENT_NAME = "comfyui-luna-multi-saver-watcher/0.1.0"
STATUS_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Context:
    """The execution the node runs in."""

    prompt_id: str | None
    node: str
    display_node: str
    client_id: str | None


def _server():
    try:
        from server import PromptServer
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)


def current_context() -> Context | None:
    """The running prompt, node and browser, from ComfyUI's executing context; None outside ComfyUI."""
    server = _server()
    if server is None:
        return None
    prompt_id = node = None
    try:
        from comfy_execution.utils import get_executing_context

        executing = get_executing_context()
        if executing is not None:
            prompt_id, node = executing.prompt_id, executing.node_id
    except ImportError:
        pass
    prompt_id = prompt_id or getattr(server, "last_prompt_id", None)
    node = node or getattr(server, "last_node_id", None)
    if node is None:
        return None
    return Context(prompt_id, str(node), str(node), getattr(server, "client_id", None))


def patch_history(server, prompt_id: str | None, node: str, output: dict) -> bool:
    """Replaces the node's outputs in the prompt's history entry. False while the prompt is still queued or
    running (ComfyUI writes the entry when the prompt ends); True once done, or when there is nothing to patch."""
    queue = getattr(server, "prompt_queue", None)
    if queue is None or prompt_id is None:
        return True
    with queue.mutex:
        entry = queue.history.get(prompt_id)
        if entry is None:
            running = any(item[1] == prompt_id for item in queue.currently_running.values())
            queued = any(item[1] == prompt_id for item in queue.queue)
            return not (running or queued)
        outputs = entry.setdefault("outputs", {})
        outputs[node] = {**outputs.get(node, {}), **output}
    return True


def final_output(event: dict, thumbnails: bool = False) -> dict:
    """The node's UI output once the job is final: the saved files in submission order, and the event. With
    ``thumbnails`` (what the node previews), an image's thumbnail stands in for its file where there is one."""
    images = [(thumbnails and image.get("thumbnail")) or image["file"] for image in event["images"]]
    return {"images": [image for image in images if image], UI_KEY: [event]}


class RecentEvents:
    """The newest event of the last :data:`RECENT_JOBS` jobs, for :data:`JOB_ROUTE`: a page that reloads, or
    gets a cached node output naming a job it has not heard of, asks for the job's state there."""

    def __init__(self, size: int = 256):
        self._size = size
        self._lock = threading.Lock()
        self._events: OrderedDict[str, dict] = OrderedDict()

    def put(self, event: dict) -> None:
        with self._lock:
            self._events.pop(event["job_id"], None)
            self._events[event["job_id"]] = event
            while len(self._events) > self._size:
                self._events.popitem(last=False)

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            return self._events.get(job_id)


RECENT_JOBS = 256
RECENT = RecentEvents(RECENT_JOBS)
# GET: the newest event of a job this ComfyUI followed (404 if none: not submitted here, or ComfyUI restarted).
JOB_ROUTE = "/luna_multi_saver/jobs/{job_id}"


def register_routes(server=None) -> bool:
    """Adds :data:`JOB_ROUTE` to ComfyUI's server (at pack load, before the server starts); False without it."""
    server = server or _server()
    if server is None or not hasattr(server, "routes"):
        return False
    from aiohttp import web

    @server.routes.get(JOB_ROUTE)
    async def job_event(request):
        event = RECENT.get(request.match_info["job_id"])
        if event is None:
            return web.json_response({"error": "this ComfyUI follows no such job"}, status=404)
        return web.json_response(event)

    return True


class ComfySink:
    """Sends the watcher's events to ComfyUI's frontend and history."""

    def __init__(self, server=_server, log=print, recent: RecentEvents = RECENT):
        self._server = server
        self._log = log
        self._recent = recent
        self._shown: set[str] = set()

    def progress(self, job: WatchedJob, event: dict) -> None:
        self._recent.put(event)
        if event["state"] in ("unknown", "unfollowed"):
            self._log(f"{LOG_PREFIX} Job {job.job_id}: {event['message']}")
        server = self._server()
        if server is not None and job.client_id is not None:
            server.send_sync(EVENT, event, job.client_id)

    def finished(self, job: WatchedJob, event: dict, newest: bool) -> bool:
        server = self._server()
        if server is None:
            return True
        if job.job_id not in self._shown:
            self._shown.add(job.job_id)
            for image in event["images"]:
                if image["state"] == "failed":
                    self._log(f"{LOG_PREFIX} Job {job.job_id}: {image['label']} failed: {image['error']}")
            if newest and job.client_id is not None:
                preview = final_output(event, thumbnails=True)
                message = {"node": job.node, "display_node": job.display_node, "output": preview}
                server.send_sync("executed", {**message, "prompt_id": job.prompt_id}, job.client_id)
        if not patch_history(server, job.prompt_id, job.node, final_output(event)):
            return False
        self._shown.discard(job.job_id)
        return True


def _connect() -> daemon.Client:
    return daemon.Client.connect(daemon.default_socket(), WATCHER_CLIENT_NAME, timeout=STATUS_TIMEOUT_S)


def _unknown_job(e: Exception) -> bool:
    return isinstance(e, daemon.DaemonError) and e.name == "unknown_job"


_LOCK = threading.Lock()
_WATCHER: JobWatcher | None = None


def watcher() -> JobWatcher:
    """The process's one watcher (its thread starts with the first job)."""
    global _WATCHER  # noqa: PLW0603 - one watcher per process, made on first use
    with _LOCK:
        if _WATCHER is None:
            _WATCHER = JobWatcher(_connect, ComfySink(), is_unknown_job=_unknown_job)
            atexit.register(_WATCHER.close)
        return _WATCHER


def follow(
    job_id: str, images: int, affixes: list[str], output_dir: str, context: Context | None = None
) -> dict | None:
    """Follows an accepted job for the execution in ``context`` (the running one by default); returns the
    pending event the node puts in its UI output, or None outside ComfyUI."""
    context = context or current_context()
    if context is None:
        return None
    job = WatchedJob(
        job_id=job_id,
        node=context.node,
        display_node=context.display_node,
        prompt_id=context.prompt_id,
        client_id=context.client_id,
        output_dir=output_dir,
        affixes=list(affixes),
        images=images,
    )
    pending = pending_event(job)
    RECENT.put(pending)
    watcher().watch(job)
    return pending

"""The job watcher (what the UI learns of a daemon job) with a scripted daemon and a hand-driven clock, the ComfyUI
side with a stand-in PromptServer, and one run against the real daemon. The real ComfyUI and the real browser
check the same in tests/real (test_real_comfyui.py, browser/ui.mjs)."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import pytest

import helpers
from helpers import flat, noise
from luna_multi_saver import client, ui_bridge, watcher
from luna_multi_saver.watcher import JobWatcher, WatchedJob, summarize, ui_image

OUT = "/srv/out"


def job(job_id="j1", node="9", client_id="c1", affixes=("ORIG", "UPSCALED"), images=2, prompt_id="p1"):
    return WatchedJob(job_id, node, node, prompt_id, client_id, OUT, list(affixes), images)


def image(index, state, slot=0, batch=0, path=None, error=None, scores=None, notes=None):
    out = {"index": index, "slot": slot, "batch_index": batch, "state": state, "path": path, "error": error}
    if scores is not None:
        out["scores"] = scores
    if notes is not None:
        out["notes"] = notes
    return out


def status(finished, *images):
    return {"job_id": "j1", "finished": finished, "segments_released": finished, "images": list(images)}


# -- summarize: one status reply -> one event ---------------------------------------------------------------------


def test_written_images_become_view_references_under_the_output_dir():
    event = summarize(
        job(),
        status(
            True,
            image(0, "written", path=f"{OUT}/ORIG/a_ORIG.png"),
            image(1, "written", slot=1, path=f"{OUT}/b_UPSCALED.webp"),
        ),
    )
    assert event["state"] == "written" and event["finished"]
    assert [i["file"] for i in event["images"]] == [
        {"filename": "a_ORIG.png", "subfolder": "ORIG", "type": "output"},
        {"filename": "b_UPSCALED.webp", "subfolder": "", "type": "output"},
    ]
    assert [i["label"] for i in event["images"]] == ["ORIG #0", "UPSCALED #0"]
    assert event["message"] == "2/2 written"
    assert ui_bridge.final_output(event)["images"] == [i["file"] for i in event["images"]]


def test_with_thumbnails_the_node_previews_them_and_history_keeps_the_full_files():
    written = image(0, "written", path=f"{OUT}/ORIG/a_ORIG.png")
    written["thumbnail"] = f"{OUT}/ORIG/_thumbnails/a_ORIG.png.webp"
    gated = image(1, "discarded", slot=1, path=f"{OUT}/_discarded/b_UPSCALED.jpg", scores={"variance": 0.0})
    gated["thumbnail"] = f"{OUT}/_discarded/_thumbnails/b_UPSCALED.jpg.webp"
    no_thumbnail = image(2, "written", slot=1, batch=1, path=f"{OUT}/c.webp", notes=["thumbnail not written: full"])
    failed = image(3, "failed", slot=1, batch=2, error={"message": "boom"})
    failed["thumbnail"] = f"{OUT}/never.webp"  # a failed image has no file, so no preview, whatever it says
    event = summarize(job(), status(True, written, gated, no_thumbnail, failed))
    assert [i["thumbnail"] for i in event["images"]] == [
        {"filename": "a_ORIG.png.webp", "subfolder": "ORIG/_thumbnails", "type": "output"},
        {"filename": "b_UPSCALED.jpg.webp", "subfolder": "_discarded/_thumbnails", "type": "output"},
        None,
        None,
    ]
    full = [i["file"] for i in event["images"][:3]]
    assert ui_bridge.final_output(event)["images"] == full, "history: the files"
    assert ui_bridge.final_output(event, thumbnails=True)["images"] == [
        event["images"][0]["thumbnail"],
        event["images"][1]["thumbnail"],
        full[2],
    ], "the node's preview: each thumbnail, else the file"

    server = FakeServer()
    server.prompt_queue.history["p1"] = {"outputs": {}}
    sink = ui_bridge.ComfySink(lambda: server, log=lambda _: None)
    assert sink.finished(job(), event, newest=True)
    (executed,) = [data for kind, data, _ in server.sent if kind == "executed"]
    assert executed["output"]["images"] == ui_bridge.final_output(event, thumbnails=True)["images"]
    assert server.prompt_queue.history["p1"]["outputs"]["9"]["images"] == full


def test_a_thumbnail_outside_the_output_dir_is_not_previewed(tmp_path):
    written = image(0, "written", path=f"{OUT}/a.png")
    written["thumbnail"] = "/elsewhere/_thumbnails/a.png.webp"
    event = summarize(job(images=1), status(True, written))
    assert event["images"][0]["thumbnail"] is None
    assert ui_bridge.final_output(event, thumbnails=True)["images"] == [event["images"][0]["file"]]


def test_a_discarded_image_is_marked_with_its_scores_and_a_failed_one_with_its_error():
    failed = {"code": 16, "name": "save_failed", "message": "libwebp: dimension too large"}
    event = summarize(
        job(),
        status(
            True,
            image(0, "discarded", path=f"{OUT}/_discarded/ORIG/a.png", scores={"variance": 0.0, "edge_density": None}),
            image(1, "failed", slot=1, error=failed),
        ),
    )
    discarded, bad = event["images"]
    assert discarded["state"] == "discarded" and discarded["scores"] == "variance=0.000"
    assert discarded["file"] == {"filename": "a.png", "subfolder": "_discarded/ORIG", "type": "output"}
    assert bad["state"] == "failed" and bad["file"] is None and bad["error"] == "libwebp: dimension too large"
    assert event["state"] == "failed"
    assert event["message"] == "0/2 written, 1 discarded, 1 failed, UPSCALED #0 failed: libwebp: dimension too large"
    assert ui_bridge.final_output(event)["images"] == [discarded["file"]], "no file for a failed image"


def test_job_states_pending_retrying_discarded():
    assert summarize(job(), status(False, image(0, "queued"), image(1, "written", path=f"{OUT}/x.png")))["state"] == (
        "pending"
    )
    retry = summarize(job(), status(False, image(0, "retrying", error={"message": "disk full"}), image(1, "queued")))
    assert retry["state"] == "retrying" and retry["message"] == "saving 0/2, ORIG #0 retrying: disk full"
    every = summarize(job(images=1), status(True, image(0, "discarded", path=f"{OUT}/_discarded/x.png")))
    assert every["state"] == "discarded"


def test_a_path_outside_the_output_dir_is_no_view_reference(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", out / "link")
    assert ui_image(str(out / "sub" / "a.png"), str(out)) == {"filename": "a.png", "subfolder": "sub", "type": "output"}
    assert ui_image(str(tmp_path / "elsewhere" / "a.png"), str(out)) is None
    assert ui_image(str(out), str(out)) is None
    assert ui_image(None, str(out)) is None
    # The daemon reports paths with symlinks resolved; an output dir reached through a symlink still matches.
    os.symlink(out, tmp_path / "out-link")
    assert ui_image(str(out / "a.png"), str(tmp_path / "out-link"))["filename"] == "a.png"


# -- the watcher, stepped by hand ---------------------------------------------------------------------------------


class Script:
    """A daemon connection whose status replies are scripted per job."""

    def __init__(self, replies: dict[str, list]):
        self.replies = replies
        self.asked: list[str] = []
        self.closed = False

    def status(self, job_id):
        self.asked.append(job_id)
        reply = self.replies[job_id].pop(0) if len(self.replies[job_id]) > 1 else self.replies[job_id][0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self):
        self.closed = True


class Recorder:
    def __init__(self, ready=True):
        self.events: list[tuple[str, str, dict]] = []
        self.finals: list[tuple[str, bool]] = []
        self.ready = ready
        self.done = threading.Event()

    def progress(self, job, event):
        self.events.append((job.job_id, event["state"], event))

    def finished(self, job, event, newest):
        self.finals.append((job.job_id, newest))
        if self.ready:
            self.done.set()
        return self.ready


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def stepper(replies, sink=None, connects=None):
    clock = Clock()
    sink = sink or Recorder()
    source = Script(replies)
    connects = connects if connects is not None else []

    def connect():
        connects.append(1)
        if isinstance(source.replies.get("__connect__"), list) and source.replies["__connect__"]:
            raise source.replies["__connect__"].pop(0)
        return source

    w = JobWatcher(connect, sink, clock=clock, log=lambda _: None, is_unknown_job=lambda e: "unknown" in str(e))
    # Never start the thread: the tests call poll_due themselves.
    w._thread = threading.current_thread()
    return w, clock, sink, source


def step(w, clock, seconds):
    clock.now += seconds
    w.poll_due(clock.now)


WRITTEN = status(True, image(0, "written", path=f"{OUT}/a.png"), image(1, "written", slot=1, path=f"{OUT}/b.png"))
RUNNING = status(False, image(0, "written", path=f"{OUT}/a.png"), image(1, "encoding", slot=1))


def test_events_only_on_change_then_the_final_delivery_and_the_job_is_forgotten():
    w, clock, sink, source = stepper({"j1": [RUNNING, RUNNING, RUNNING, WRITTEN]})
    w.watch(job())
    step(w, clock, 0.0)
    assert source.asked == [], "not due before its first delay"
    for _ in range(3):
        step(w, clock, 10)
    assert [s for _, s, _ in sink.events] == ["pending"], "three identical replies, one event"
    step(w, clock, 10)
    assert [s for _, s, _ in sink.events] == ["pending", "written"]
    assert sink.finals == [("j1", True)]
    assert w.followed() == []


def test_polling_backs_off_from_20_ms_doubling_to_1_s():
    w, clock, _, source = stepper({"j1": [RUNNING]})
    w.watch(job())
    polled_at = []
    for _ in range(2000):  # 20 s in 10 ms steps
        before = len(source.asked)
        step(w, clock, 0.01)
        if len(source.asked) > before:
            polled_at.append(round(clock.now - 100.0, 2))
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(polled_at)]
    assert polled_at[0] == 0.02
    assert gaps[:7] == [0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0] and set(gaps[7:]) == {1.0}
    assert len(polled_at) < 30, "a long job costs one request a second"


def test_an_older_job_of_the_same_node_finishing_last_does_not_replace_the_newer_images():
    w, clock, sink, _ = stepper({"old": [RUNNING, RUNNING, WRITTEN], "new": [WRITTEN], "other": [WRITTEN]})
    w.watch(job("old"))
    w.watch(job("new"))
    w.watch(job("other", node="12"))
    step(w, clock, 0.02)
    step(w, clock, 10)
    assert sorted(sink.finals) == [("new", True), ("other", True)]
    step(w, clock, 10)
    assert sorted(sink.finals) == [("new", True), ("old", False), ("other", True)]


def test_a_history_entry_not_written_yet_is_asked_for_again():
    sink = Recorder(ready=False)
    w, clock, sink, source = stepper({"j1": [WRITTEN]}, sink)
    w.watch(job())
    step(w, clock, 0.02)
    step(w, clock, 10)
    assert sink.finals == [("j1", True), ("j1", True)] and source.asked == ["j1"], "the status is not asked again"
    sink.ready = True
    step(w, clock, 10)
    assert w.followed() == []


def test_a_daemon_restart_reconnects_with_back_off_and_follows_on():
    lost = client.ConnectionLost("the daemon closed the connection")
    refused = client.DaemonUnreachable("cannot reach luna-daemon")
    connects = []
    w, clock, sink, source = stepper({"j1": [RUNNING, lost, WRITTEN], "__connect__": []}, connects=connects)
    w.watch(job())
    step(w, clock, 0.02)  # RUNNING
    source.replies["__connect__"] = [refused, refused]
    step(w, clock, 10)  # lost: the connection is dropped and one reconnect is tried at once (refused)
    assert source.closed
    messages = [e["message"] for _, _, e in sink.events]
    assert messages[-1].endswith("daemon not answering: the daemon closed the connection")
    step(w, clock, 0.01)  # not due yet: the reconnect backs off
    assert len(connects) == 2
    step(w, clock, 10)  # refused again: told once more (another reason), next try later
    step(w, clock, 10)  # connects, and the recovered job is written
    assert [s for _, s, _ in sink.events][-1] == "written" and sink.finals == [("j1", True)]
    assert len(connects) == 4


def test_a_job_the_restarted_daemon_does_not_know_ends_unknown():
    w, clock, sink, _ = stepper({"j1": [client.DaemonError({"code": 11, "message": "unknown job j1"})]})
    w.watch(job())
    step(w, clock, 0.02)
    assert sink.events[-1][1] == "unknown" and sink.events[-1][2]["finished"]
    assert "no longer knows this job" in sink.events[-1][2]["message"]
    assert w.followed() == [] and sink.finals == []


def test_a_job_is_followed_for_at_most_an_hour():
    w, clock, sink, _ = stepper({"j1": [status(False, image(0, "retrying", error={"message": "EACCES"}))]})
    w.watch(job(images=1))
    step(w, clock, 0.02)
    assert sink.events[-1][1] == "retrying"
    step(w, clock, watcher.FOLLOW_LIMIT_S)
    assert sink.events[-1][1] == "unfollowed" and w.followed() == []


def test_a_sink_that_raises_does_not_stop_the_watcher():
    class Broken(Recorder):
        def progress(self, job, event):
            raise RuntimeError("socket gone")

    w, clock, sink, _ = stepper({"j1": [WRITTEN]}, Broken())
    w.watch(job())
    step(w, clock, 0.02)
    assert sink.finals == [("j1", True)]


# -- the thread -----------------------------------------------------------------------------------------------------


def test_the_thread_starts_with_the_first_job_sleeps_without_polling_when_idle_and_stops_on_close():
    connects = []
    sink = Recorder()
    source = Script({"j1": [WRITTEN]})
    w = JobWatcher(lambda: connects.append(1) or source, sink, log=lambda _: None)
    assert w._thread is None, "no thread until a job is followed"
    w.watch(job())
    assert sink.done.wait(30), "the job was never reported"
    thread = w._thread
    assert thread.is_alive() and w.followed() == []
    asked = len(source.asked)
    w.close()
    assert not thread.is_alive() and len(source.asked) == asked == 1 and connects == [1]


# -- the ComfyUI side, with a stand-in PromptServer -----------------------------------------------------------------


class FakeQueue:
    def __init__(self):
        self.mutex = threading.RLock()
        self.history: dict = {}
        self.currently_running: dict = {}
        self.queue: list = []


class FakeServer:
    def __init__(self):
        self.sent: list[tuple[str, dict, str]] = []
        self.prompt_queue = FakeQueue()

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data, sid))


def test_the_sink_sends_progress_then_one_executed_with_the_real_files_and_patches_history():
    server = FakeServer()
    logs = []
    sink = ui_bridge.ComfySink(lambda: server, log=logs.append)
    j = job(images=1)
    running = summarize(j, status(False, image(0, "encoding")))
    sink.progress(j, running)
    assert server.sent == [(ui_bridge.EVENT, running, "c1")]
    final = summarize(
        j, status(True, image(0, "failed", error={"message": "boom"}), image(1, "written", path=f"{OUT}/b.png"))
    )
    server.prompt_queue.currently_running[1] = (0, "p1", {}, {}, [])
    assert not sink.finished(j, final, newest=True), "the prompt still runs: history later"
    assert sink.finished(j, final, newest=True) is False
    executed = [s for s in server.sent if s[0] == "executed"]
    message = {"node": "9", "display_node": "9", "output": ui_bridge.final_output(final), "prompt_id": "p1"}
    assert executed == [("executed", message, "c1")], "sent once"
    assert logs == ["[LunaMultiSaver] Job j1: ORIG #0 failed: boom"]
    server.prompt_queue.currently_running.clear()
    server.prompt_queue.history["p1"] = {"outputs": {"9": {"images": [{"filename": "prev.jpg", "type": "temp"}]}}}
    assert sink.finished(j, final, newest=True)
    assert server.prompt_queue.history["p1"]["outputs"]["9"]["images"] == [
        {"filename": "b.png", "subfolder": "", "type": "output"}
    ]
    assert len([s for s in server.sent if s[0] == "executed"]) == 1


def test_an_older_job_patches_its_own_history_but_sends_no_executed():
    server = FakeServer()
    server.prompt_queue.history["p1"] = {"outputs": {}}
    sink = ui_bridge.ComfySink(lambda: server, log=lambda _: None)
    event = summarize(job(images=1), status(True, image(0, "written", path=f"{OUT}/a.png")))
    assert sink.finished(job(), event, newest=False)
    assert server.sent == [] and server.prompt_queue.history["p1"]["outputs"]["9"]["images"][0]["filename"] == "a.png"


def test_a_prompt_gone_from_history_and_queue_is_not_waited_for():
    assert ui_bridge.patch_history(FakeServer(), "p-cleared", "9", {"images": []})


def test_an_api_client_without_a_client_id_gets_no_messages_but_history():
    server = FakeServer()
    server.prompt_queue.history["p1"] = {"outputs": {}}
    sink = ui_bridge.ComfySink(lambda: server, log=lambda _: None)
    j = job(client_id=None, images=1)
    event = summarize(j, status(True, image(0, "written", path=f"{OUT}/a.png")))
    sink.progress(j, event)
    assert sink.finished(j, event, newest=True)
    assert server.sent == [] and server.prompt_queue.history["p1"]["outputs"]["9"]["images"]


def test_without_comfyui_nothing_is_followed():
    assert ui_bridge.current_context() is None
    assert ui_bridge.follow("j1", 1, ["ORIG"], OUT) is None


# -- against the real daemon ----------------------------------------------------------------------------------------


@pytest.fixture
def recording_watcher(monkeypatch):
    sink = Recorder()
    w = JobWatcher(ui_bridge._connect, sink, log=lambda _: None, is_unknown_job=ui_bridge._unknown_job)
    monkeypatch.setattr(ui_bridge, "watcher", lambda: w)
    context = ui_bridge.Context(prompt_id="p1", node="9", display_node="9", client_id="c1")
    monkeypatch.setattr(ui_bridge, "current_context", lambda: context)
    yield w, sink
    w.close()


def test_the_node_follows_its_job_on_the_real_daemon_until_the_files_are_written(daemon, comfy_dirs, recording_watcher):
    _, sink = recording_watcher
    saver, result = helpers.run_node(
        True, image_1=noise(2), format_1="png", image_2=flat(), format_2="webp", quality_gate="variance"
    )
    pending = result["ui"][ui_bridge.UI_KEY]
    assert [p["state"] for p in pending] == ["pending"] and pending[0]["job_id"] == saver.last_job.job_id
    assert sink.done.wait(60), "the watcher never saw the job finish"
    job_id, state, event = sink.events[-1]
    assert job_id == saver.last_job.job_id and state == "written" and event["finished"]
    assert [(i["label"], i["state"]) for i in event["images"]] == [
        ("ORIG #0", "written"),
        ("ORIG #1", "written"),
        ("UPSCALED #0", "discarded"),
    ]
    for i in event["images"]:
        assert (comfy_dirs.output / i["file"]["subfolder"] / i["file"]["filename"]).is_file(), i
    assert event["images"][2]["file"]["subfolder"] == "_discarded/UPSCALED"
    assert event["message"] == "2/3 written, 1 discarded"


def test_the_node_previews_the_thumbnails_the_real_daemon_wrote(daemon, comfy_dirs, recording_watcher):
    _, sink = recording_watcher
    helpers.run_node(True, image_1=noise(1), format_1="png", thumbnails=True, thumbnail_size=16)
    assert sink.done.wait(60), "the watcher never saw the job finish"
    _, state, event = sink.events[-1]
    assert state == "written"
    (shown,) = ui_bridge.final_output(event, thumbnails=True)["images"]
    (full,) = ui_bridge.final_output(event)["images"]
    assert shown["subfolder"] == f"{full['subfolder']}/_thumbnails" and shown["filename"] == f"{full['filename']}.webp"
    thumbnail = helpers.decoded(comfy_dirs.output / shown["subfolder"] / shown["filename"])
    assert max(thumbnail.shape[:2]) == 16


def test_a_job_the_daemon_forgot_across_a_restart_ends_unknown(daemon, comfy_dirs, recording_watcher):
    w, sink = recording_watcher
    saver, _ = helpers.run_node(True, image_1=noise(1), format_1="png")
    with daemon.client("test-waiter") as c:
        c.wait(saver.last_job.job_id)
    w.close()  # stop following; restart the daemon; follow the same id again
    daemon.stop()
    daemon.start()
    w2 = JobWatcher(ui_bridge._connect, sink, log=lambda _: None, is_unknown_job=ui_bridge._unknown_job)
    done = threading.Event()
    sink.progress = lambda job, event: (sink.events.append((job.job_id, event["state"], event)), done.set())
    w2.watch(job(saver.last_job.job_id, images=1))
    try:
        assert done.wait(60)
    finally:
        w2.close()
    assert sink.events[-1][1] == "unknown"


def test_the_js_extension_listens_for_the_event_the_python_side_sends():
    js = (Path(ui_bridge.__file__).parent / "web" / "luna_multi_saver.js").read_text()
    assert f'"{ui_bridge.EVENT}"' in js and f'"{ui_bridge.UI_KEY}"' in js


def test_the_server_keeps_the_newest_event_of_the_last_jobs_for_a_page_that_asks():
    recent = ui_bridge.RecentEvents(size=2)
    sink = ui_bridge.ComfySink(lambda: None, log=lambda _: None, recent=recent)
    a, b, c = job("a"), job("b"), job("c")
    sink.progress(a, summarize(a, RUNNING))
    sink.progress(a, summarize(a, WRITTEN))
    sink.progress(b, summarize(b, RUNNING))
    assert recent.get("a")["state"] == "written" and recent.get("b")["state"] == "pending"
    sink.progress(c, summarize(c, RUNNING))
    assert recent.get("a") is None, "only the last two jobs are kept"
    assert ui_bridge.register_routes(server=object()) is False, "no ComfyUI server: no route"

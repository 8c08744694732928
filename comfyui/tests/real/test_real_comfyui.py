"""The node inside the real ComfyUI 0.3.64 (headless, CPU), driven over its HTTP API as the frontend drives it:
auto-start, daemon ON, OFF, daemon down (fallback), every format, five slots, batch 1 and 4, gates, templates,
``--disable-metadata``, and parity of names, pixels and metadata between ON and OFF and with SaveImage.

Run by ``make test-comfyui``; skipped without the real ComfyUI (see ``comfyui_server.py``). The tests share one
server and run in file order (the first one auto-starts the daemon); each uses its own ``save_path``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import zipfile
from pathlib import Path

import comfyui_server as cs
import numpy as np
import pytest

from helpers import comfy_frontend_exif, decoded, files_under, jpeg_exif, png_text, webp_chunks, webp_exif
from luna_multi_saver import client

if not cs.available():
    pytest.skip(cs.SKIP_REASON, allow_module_level=True)

SUBMITTED = re.compile(r"Submitted (\d+) images to daemon \(Job ID: ([^)]+)\)")
WORKFLOW = {
    "nodes": [{"id": 9, "type": "LunaMultiSaver", "widgets_values": ["", "img", True, 'ünïcødé ✓ "q" \\']}],
    "links": [],
    "extra": {"note": "非ASCII テキスト"},
}
FORMATS = ["png", "webp", "jpeg", "webp", "png"]


@pytest.fixture(scope="module")
def env() -> dict:
    """The daemon's socket, spool and state in a private temp dir, shared by the server and the tests."""
    binary = os.environ.get("LUNA_DAEMON_BIN")
    if not binary:
        pytest.fail("LUNA_DAEMON_BIN must name the luna-daemon binary (make test-comfyui sets it)")
    root = Path(tempfile.mkdtemp(prefix="luna-rc-", dir="/tmp"))
    yield {
        "LUNA_DAEMON_BIN": binary,
        "LUNA_DAEMON_SOCKET": str(root / "run" / "luna.sock"),
        "LUNA_DAEMON_SPOOL_DIR": str(root / "spool"),
        "LUNA_DAEMON_STATE_DIR": str(root / "state"),
        # The stand-in tests switch auto-start off in the test process; the server follows the node input.
        "LUNA_DAEMON_AUTOSTART": "1",
    }
    stop_daemon(str(root / "run" / "luna.sock"))
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(env) -> cs.ComfyServer:
    root = Path(tempfile.mkdtemp(prefix="luna-comfy-", dir="/tmp"))
    s = cs.ComfyServer(root=root, env=env, extra_args=("--cache-none",)).start()
    yield s
    s.stop()
    shutil.rmtree(root, ignore_errors=True)


def answers(socket_path: str) -> bool:
    try:
        client.Client.connect(socket_path, "real-comfyui-probe").close()
        return True
    except client.ClientError:
        return False


def stop_daemon(socket_path: str) -> None:
    """Asks the daemon to stop and waits until it no longer answers."""
    if not answers(socket_path):
        return
    with client.Client.connect(socket_path, "real-comfyui-test") as c:
        c.stop()
    deadline = time.monotonic() + 60
    while answers(socket_path):
        assert time.monotonic() < deadline, "the daemon did not stop"
        time.sleep(0.05)


@pytest.fixture
def daemon_up(server, env) -> str:
    """A daemon answering on the server's socket (started by the node's auto-start when needed)."""
    socket_path = env["LUNA_DAEMON_SOCKET"]
    if not answers(socket_path):
        run = server.run({**cs.source_graph(), **cs.saver_node(save_path="_warmup", daemon_save=True)})
        assert run.ok, run.error()
        wait_jobs(server, socket_path)
    return socket_path


_WAITED: set[str] = set()


def wait_jobs(server: cs.ComfyServer, socket_path: str) -> list[dict]:
    """Waits for every job the node submitted since the last call; returns their final statuses."""
    statuses = []
    with client.Client.connect(socket_path, "real-comfyui-waiter") as c:
        for _, job_id in SUBMITTED.findall(server.logs()):
            if job_id not in _WAITED:
                statuses.append(c.wait(job_id))
                _WAITED.add(job_id)
    return statuses


def five_slots(save_path: str, daemon_save: bool, **inputs) -> dict:
    slots = {}
    for i, fmt in enumerate(FORMATS, start=1):
        slots[f"image_{i}"] = ["2", 0]
        slots[f"format_{i}"] = fmt
    return cs.saver_node(save_path=save_path, daemon_save=daemon_save, autostart_daemon=False, **slots, **inputs)


def relative(root: Path) -> list[str]:
    return files_under(root) if root.is_dir() else []


def metadata_of(path: Path) -> dict:
    """The embedded text as ComfyUI's frontend reads it: PNG tEXt, or the WebP/JPEG EXIF IFD0 ``key:value`` tags."""
    if path.suffix == ".png":
        return dict(png_text(path))
    if path.suffix == ".webp":
        exif = webp_exif(path) if any(kind == b"EXIF" for kind, _ in webp_chunks(path)) else None
    else:
        exif = jpeg_exif(path)
    return comfy_frontend_exif(exif) if exif else {}


def comparable(meta: dict) -> dict:
    """What two executions of one graph share: not the run's time, and the prompt without the saver's inputs
    that differ by design (``save_path``, ``daemon_save``)."""
    out = {k: v for k, v in meta.items() if k != "save_timestamp"}
    if "prompt" in out:
        prompt = json.loads(out["prompt"])
        for key in ("save_path", "daemon_save"):
            prompt["9"]["inputs"].pop(key)
        out["prompt"] = prompt
    return out


def history_images(server: cs.ComfyServer, prompt_id: str) -> list[dict]:
    """The node's images in the prompt's history entry, once the watcher has put the saved files there."""
    deadline = time.monotonic() + cs.PROMPT_DEADLINE_S
    while True:
        images = server.get(f"/history/{prompt_id}").get(prompt_id, {}).get("outputs", {}).get("9", {})
        images = images.get("images", [])
        if images and all(i["type"] == "output" for i in images):
            return images
        assert time.monotonic() < deadline, f"history of {prompt_id} still shows {images}"
        time.sleep(0.05)


def saved_files(
    server: cs.ComfyServer,
    saver: dict,
    where: str,
    socket_path: str | None = None,
    graph: dict | None = None,
    workflow: dict | None = None,
) -> tuple[cs.Execution, list[str]]:
    """Runs ``graph`` (the default source graph) with ``saver``, which must succeed, waits for the daemon's jobs
    when ``socket_path`` is given, and returns the execution and the files under ``output/<where>``."""
    run = server.run({**(graph or cs.source_graph()), **saver}, workflow)
    assert run.ok, run.error()
    if socket_path is not None:
        wait_jobs(server, socket_path)
    return run, relative(server.output / where)


# -- tests, in the order they run ---------------------------------------------------------------------------------


def test_the_first_on_execution_auto_starts_the_daemon(server, env):
    socket_path = env["LUNA_DAEMON_SOCKET"]
    assert not answers(socket_path)
    run = server.run({**cs.source_graph(), **cs.saver_node(save_path="auto", daemon_save=True, autostart_daemon=True)})
    assert run.ok, run.error()
    assert "Started luna-daemon (pid" in server.logs()
    # The node returns a temp preview; once the daemon wrote the file, the history entry names the file instead.
    assert [i["type"] for i in run.images()] in (["temp"], ["output"])
    assert [s["images"][0]["state"] for s in wait_jobs(server, socket_path)] == ["written"]
    assert relative(server.output / "auto") == ["ORIG/img_ORIG.webp"]
    assert history_images(server, run.prompt_id) == [
        {"filename": "img_ORIG.webp", "subfolder": "auto/ORIG", "type": "output"}
    ]


@pytest.mark.parametrize(("batch", "lossless"), [(4, False), (1, True)])
def test_on_and_off_write_the_same_names_pixels_and_metadata_for_every_format(server, daemon_up, batch, lossless):
    tag = f"b{batch}{'l' if lossless else ''}"
    graph = cs.source_graph(batch=batch, seed=batch)
    on = server.run({**graph, **five_slots(f"on_{tag}", True, lossless_webp=lossless)}, WORKFLOW)
    off = server.run({**graph, **five_slots(f"off_{tag}", False, lossless_webp=lossless)}, WORKFLOW)
    assert on.ok and off.ok, (on.error(), off.error())
    assert f"Submitted {5 * batch} images to daemon" in server.logs(), server.logs()[-3000:]
    assert [i["type"] for i in off.images()] == ["output"] * 5 * batch
    assert all(s["finished"] for s in wait_jobs(server, daemon_up))
    on_root, off_root = server.output / f"on_{tag}", server.output / f"off_{tag}"
    names = relative(on_root)
    # ON's history entry ends up naming the saved files, as OFF's does (the watcher replaces the previews).
    shown = history_images(server, on.prompt_id)
    assert sorted(f"{i['subfolder']}/{i['filename']}" for i in shown) == [f"on_{tag}/{n}" for n in names]
    assert names == relative(off_root) and len(names) == 5 * batch
    assert {Path(n).suffix for n in names} == {".png", ".webp", ".jpg"}
    for name in names:
        a, b = on_root / name, off_root / name
        meta = metadata_of(a)
        assert {"prompt", "workflow"} <= set(meta) and comparable(meta) == comparable(metadata_of(b)), name
        assert json.loads(meta["workflow"]) == WORKFLOW, name
        exact = a.suffix == ".png" or (a.suffix == ".webp" and lossless)
        pa, pb = decoded(a), decoded(b)
        if exact:
            assert (pa == pb).all(), name
        else:  # two lossy encoders (the daemon's and Pillow's) at the same quality
            assert pa.shape == pb.shape and np.abs(pa.astype(int) - pb.astype(int)).mean() < 8, name
    png = next(on_root / n for n in names if n.endswith(".png"))
    assert json.dumps(WORKFLOW) == metadata_of(png)["workflow"], "json.dumps with its defaults, as SaveImage"


def test_pixels_equal_saveimages(server, daemon_up):
    graph = {**cs.source_graph(batch=4, seed=7), **cs.save_image_node("stock")}
    on = server.run({**graph, **cs.saver_node(save_path="px_on", daemon_save=True, format_1="png", subdir_1=False)})
    assert on.ok, on.error()
    wait_jobs(server, daemon_up)
    stock = sorted(server.output.glob("stock_*.png"))
    ours = sorted((server.output / "px_on").glob("*.png"))
    assert len(stock) == len(ours) == 4
    for a, b in zip(stock, ours, strict=True):
        assert (decoded(a) == decoded(b)).all(), (a, b)


@pytest.mark.parametrize("daemon_save", [True, False])
def test_quality_gates_put_flat_images_under_discarded(server, daemon_up, daemon_save):
    where = f"gate_{daemon_save}"
    saver = cs.saver_node(save_path=where, daemon_save=daemon_save, autostart_daemon=False, quality_gate="variance")
    saver["9"]["inputs"]["image_1"] = ["1", 0]  # EmptyImage: one flat colour, variance 0
    saver["9"]["inputs"]["image_2"] = ["2", 0]  # noisy: passes
    _, names = saved_files(server, saver, where, daemon_up)
    assert names == ["UPSCALED/img_UPSCALED.webp", "_discarded/ORIG/img_ORIG.webp"]


@pytest.mark.parametrize("daemon_save", [True, False])
def test_a_date_template_with_colons_saves_with_underscores(server, daemon_up, daemon_save):
    where = f"date_{daemon_save}"
    saver = cs.saver_node(
        save_path=f"{where}/%date:yyyy%", filename="%date:yyyy-MM-dd hh:mm:ss%_%model_name%", daemon_save=daemon_save
    )
    _, (name,) = saved_files(server, saver, where, daemon_up)
    assert re.fullmatch(r"\d{4}/ORIG/\d{4}-\d\d-\d\d \d\d_\d\d_\d\d_UnknownModel_ORIG\.webp", name), name


def test_a_typed_colon_fails_once_with_the_daemons_reason(server, daemon_up):
    run = server.run({**cs.source_graph(), **cs.saver_node(save_path="colon", filename="a:b", daemon_save=True)})
    assert not run.ok
    assert run.error().startswith("the daemon refused the job: filename"), run.error()
    assert "not available" not in server.logs()
    assert relative(server.output / "colon") == []


BROWSER = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def ui_node(node_id: int, kind: str, x: int, size: list[int], order: int, **fields) -> dict:
    """One node of a UI workflow as the frontend saves it."""
    node = {"id": node_id, "type": kind, "pos": [x, 0], "size": size, "flags": {}, "order": order, "mode": 0}
    return {**node, **fields, "properties": {}}


def ui_workflow(nodes: list[dict]) -> dict:
    """A UI workflow: EmptyImage (node 1) -> ImageAddNoise (node 2), then ``nodes``."""
    source = [
        ui_node(1, "EmptyImage", 0, [300, 130], 0, outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [1]}]),
        ui_node(
            2,
            "ImageAddNoise",
            350,
            [300, 110],
            1,
            inputs=[{"name": "image", "type": "IMAGE", "link": 1}],
            outputs=[{"name": "IMAGE", "type": "IMAGE", "links": []}],
        ),
    ]
    return {
        "last_node_id": max(n["id"] for n in nodes),
        "last_link_id": 1,
        "nodes": source + nodes,
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


def big_workflow() -> dict:
    """A UI workflow of about 200 KB the frontend knows every node of, with non-ASCII text, quotes, a backslash."""
    text = 'Ünïcødé ✓ 非ASCII テキスト "quoted" back\\slash\n' * 4000
    workflow = ui_workflow([ui_node(10, "Note", 0, [400, 200], 2, widgets_values=[text])])
    workflow["nodes"][2]["pos"] = [0, 200]
    workflow["nodes"][0]["widgets_values"] = [64, 48, 1, 3355545]
    workflow["nodes"][1]["widgets_values"] = [1, "fixed", 0.5]
    return workflow


def essentials(graph: dict) -> dict:
    """What a restore must reproduce: node ids, types and widget values, and the links."""
    nodes = sorted((n["id"], n["type"], n.get("widgets_values")) for n in graph["nodes"])
    return {"nodes": nodes, "links": sorted(map(tuple, graph.get("links") or []))}


def odd_image_chunk(path: Path) -> bool:
    return any(kind in (b"VP8L", b"VP8 ") and len(body) % 2 for kind, body in webp_chunks(path))


def small_workflow() -> dict:
    """A UI workflow small enough for a JPEG's 64 KiB EXIF segment, with non-ASCII text."""
    workflow = big_workflow()
    workflow["nodes"][2]["widgets_values"] = ['Ünïcødé ✓ 非ASCII テキスト "quoted" back\\slash']
    return workflow


def pillow_lossless_webp(path: Path, workflow: dict) -> Path:
    """A lossless WebP written the way ComfyUI's own savers write one (Pillow: EXIF after the image data, the
    workflow in IFD0 tag 0x010F), with an odd-sized image chunk: frontend 1.27 alone restores nothing from it."""
    from PIL import Image

    for seed in range(64):
        pixels = np.random.default_rng(seed).integers(0, 256, (48, 64 + seed, 3), dtype=np.uint8)
        exif = Image.Exif()
        exif[0x010F] = "workflow:" + json.dumps(workflow)
        Image.fromarray(pixels).save(path, "WEBP", lossless=True, exif=exif)
        kinds = [kind for kind, _ in webp_chunks(path)]
        if odd_image_chunk(path) and kinds[-1] == b"EXIF":
            return path
    raise AssertionError("no odd-sized lossless chunk among the sizes tried")


def restore_in_browser(server, tmp_path, workflows: list[dict], files: list[tuple[Path, int]]) -> dict:
    """Drops each file on the real frontend (browser/restore.mjs); ``files`` pairs a path with the index of the
    workflow it embeds, whose frontend-built graph is the reference."""
    mime = {".png": "image/png", ".webp": "image/webp", ".jpg": "image/jpeg", ".avif": "image/avif"}
    request = {
        "workflows": workflows,
        "files": [{"path": str(p), "mime": mime[p.suffix], "workflow": w} for p, w in files],
    }
    return in_browser("restore.mjs", server, tmp_path, request)


def in_browser(script: str, server, tmp_path: Path, request: dict) -> dict:
    """Runs ``browser/<script>`` on ``request`` against the server in headless chromium; its JSON report."""
    (tmp_path / "request.json").write_text(json.dumps(request))
    out = subprocess.run(
        ["node", str(BROWSER / script), server.url, str(tmp_path / "request.json")],
        check=False,
        cwd=BROWSER,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout)


needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(), reason=f"no chromium at {CHROMIUM} (apt-get install chromium)"
)


@needs_chromium
def test_the_real_frontend_restores_the_embedded_workflow_from_our_files(server, daemon_up, tmp_path):
    big, small = big_workflow(), small_workflow()
    assert len(json.dumps(big)) > 200_000 and len(json.dumps(small)) < 20_000
    files = {}
    for daemon_save in (True, False):
        for fmt, lossless, workflow in (
            ("png", False, big),
            ("webp", False, big),
            ("webp", True, small),  # the layout is what matters here, not the size
            ("jpeg", False, big),
            ("jpeg", False, small),
            # Issue 15: the 200 KB workflow in an AVIF Exif item (daemon: rav1e, 10-bit; local: Pillow, 8-bit).
            ("avif", False, big),
        ):
            # Lossless: the first seed whose image chunk has an odd size (the case frontend 1.27 used to miss).
            for seed in range(1, 33 if lossless else 2):
                where = f"fe_{daemon_save}_{fmt}_{lossless}_{workflow is small}_{seed}"
                saver = cs.saver_node(save_path=where, daemon_save=daemon_save, format_1=fmt, lossless_webp=lossless)
                _, (name,) = saved_files(server, saver, where, daemon_up, cs.source_graph(seed=seed), workflow)
                files[(daemon_save, fmt, lossless, workflow is small)] = path = server.output / where / name
                if not lossless or odd_image_chunk(path):
                    break
            else:
                raise AssertionError("no seed gave an odd-sized lossless image chunk")
    for fmt in ("png", "jpeg"):
        bare = cs.saver_node(save_path=f"fe_bare_{fmt}", format_1=fmt, embed_workflow=False)
        _, (name,) = saved_files(server, bare, f"fe_bare_{fmt}", workflow=small)
        files[f"bare_{fmt}"] = server.output / f"fe_bare_{fmt}" / name
    files["pillow_lossless_webp"] = pillow_lossless_webp(tmp_path / "comfyui_style.webp", small)

    def embeds(key) -> int:
        return 1 if key in ("pillow_lossless_webp", "bare_png", "bare_jpeg") or key[3] else 0

    report = restore_in_browser(server, tmp_path, [big, small], [(p, embeds(k)) for k, p in files.items()])
    assert report["extension"], "the pack's frontend extension did not load"
    expected = [essentials(r) for r in report["references"]]
    assert [n[1] for n in expected[0]["nodes"]] == ["EmptyImage", "ImageAddNoise", "Note"]
    assert expected[0]["nodes"][2][2] == big["nodes"][2]["widgets_values"], "non-ASCII text intact"
    assert expected[1]["nodes"][2][2] == small["nodes"][2]["widgets_values"]
    for key, result in zip(files, report["results"], strict=True):
        if key in ("bare_png", "bare_jpeg"):
            assert result["nodes"] == 0, f"{key}: a file without metadata restores nothing"
        elif key != "pillow_lossless_webp" and key[1] == "jpeg" and not key[3]:
            # 200 KB do not fit a JPEG's 64 KiB EXIF segment: the workflow is left out (with a note), so nothing.
            assert "workflow" not in metadata_of(files[key]), key
            assert result["nodes"] == 0, key
        else:
            chunks = (
                [(kind, len(body)) for kind, body in webp_chunks(files[key])] if files[key].suffix == ".webp" else []
            )
            assert essentials(result["graph"]) == expected[embeds(key)], (key, chunks)
            # Without the pack's extension (the core handler alone): PNG and our WebP restore, lossless with an
            # odd-sized image chunk included, because we put EXIF before the image data; JPEG and a WebP with EXIF
            # after an odd-sized chunk (as ComfyUI's own lossless files have it) restore only with the extension.
            if files[key].suffix == ".jpg" or key == "pillow_lossless_webp":
                assert result["core_nodes"] == 0, (key, chunks)
            else:
                assert essentials(result["core_graph"]) == expected[embeds(key)], (key, chunks)
            if chunks:
                assert key == "pillow_lossless_webp" or [c[0] for c in chunks[:2]] == [b"VP8X", b"EXIF"], chunks


UI_WORKFLOW = ui_workflow([ui_node(9, "LunaMultiSaver", 700, [400, 700], 2)])


@needs_chromium
def test_the_ui_shows_the_saved_files_the_discarded_and_the_failed_images_and_the_jobs_progress(
    server, daemon_up, tmp_path
):
    source = cs.source_graph(seed=21)
    gate = cs.saver_node(save_path="ui_gate", daemon_save=True, quality_gate="variance", format_2="png")
    gate["9"]["inputs"]["image_1"] = ["1", 0]  # EmptyImage: flat, variance 0 -> discarded
    gate["9"]["inputs"]["image_2"] = ["2", 0]
    runs = [
        {
            "name": "written",
            "prompt": {**source, **cs.saver_node(save_path="ui_written", daemon_save=True, format_1="png")},
        },
        {"name": "discarded", "prompt": {**source, **gate}},
        # libwebp encodes at most 16383 pixels a side: the daemon's save fails (a codec error, final, no retry).
        {
            "name": "failed",
            "prompt": {
                **cs.source_graph(width=16384, height=1),
                **cs.saver_node(save_path="ui_failed", daemon_save=True),
            },
            "toast": "save failed",
        },
        # Thumbnails: the node previews the daemon's small WebPs; history and the menu give the full files.
        {
            "name": "thumbnails",
            "prompt": {
                **cs.source_graph(seed=22),
                **cs.saver_node(
                    save_path="ui_thumbs",
                    daemon_save=True,
                    format_1="png",
                    image_2=["2", 0],
                    format_2="jpeg",
                    affix_2="UPSCALED",
                    thumbnails=True,
                    thumbnail_size=32,
                ),
            },
        },
    ]
    report = in_browser("ui.mjs", server, tmp_path, {"workflow": UI_WORKFLOW, "runs": runs})
    assert report["extension"], "the pack's frontend extension did not load"
    written, discarded, failed, thumbs = report["runs"]

    # The node first shows the temp previews with a pending badge, then the real saved files.
    first, last = written["executed"][0]["output"], written["executed"][-1]["output"]
    assert [i["type"] for i in first["images"]] == ["temp"] and first["luna_multi_saver"][0]["state"] == "pending"
    (name,) = relative(server.output / "ui_written")
    assert last["images"] == [{"filename": Path(name).name, "subfolder": "ui_written/ORIG", "type": "output"}]
    assert written["job"]["state"] == "written" and written["job"]["message"] == "1/1 written"
    assert len(written["imgs"]) == 1 and "type=output" in written["imgs"][0] and Path(name).name in written["imgs"][0]
    assert written["row"]["state"] == "written" and written["row"]["visible"]
    assert written["toasts"] == []
    # Without thumbnails the core's menu entries are untouched: they open and save the previewed file.
    assert [view_file(u) for u in written["menu"]["opened"]] == [("ui_written/ORIG", Path(name).name)] * 2
    assert written["menu"]["copied"] == [64, 48]
    # ComfyUI's history points at the saved file too (the temp preview is gone when ComfyUI restarts).
    assert history_images(server, written["prompt_id"]) == last["images"]

    # A discarded image: saved under _discarded, shown, and marked in the badge and the panel.
    assert discarded["job"]["state"] == "written" and discarded["job"]["counts"]["discarded"] == 1
    assert sorted(relative(server.output / "ui_gate")) == ["UPSCALED/img_UPSCALED.png", "_discarded/ORIG/img_ORIG.webp"]
    assert any("_discarded" in src for src in discarded["imgs"]) and len(discarded["imgs"]) == 2
    (line,) = discarded["row"]["images"]
    assert line["state"] == "discarded" and line["text"].startswith("ORIG #0 discarded (variance=0.000)"), line
    assert "_discarded/ORIG/img_ORIG.webp" in line["text"]

    # A failed save: a visible error (toast, badge, panel), not only the console; nothing written.
    assert failed["job"]["state"] == "failed" and failed["job"]["counts"]["failed"] == 1
    assert any("save failed" in t and "ORIG #0 failed" in t for t in failed["toasts"]), failed["toasts"]
    assert failed["row"]["state"] == "failed" and failed["row"]["images"][0]["state"] == "failed"
    assert relative(server.output / "ui_failed") == []
    assert f"Job {failed['job']['job_id']}: ORIG #0 failed:" in server.logs()
    # A page that reloads asks the server for a job's state (the extension does when it sees an unknown job).
    assert server.get(f"/luna_multi_saver/jobs/{written['job']['job_id']}") == written["job"]
    with pytest.raises(urllib.error.HTTPError, match="404"):
        server.get("/luna_multi_saver/jobs/000000000000")

    # Thumbnails: the node's preview loads _thumbnails/<name>.webp; history, Open Image and Save Image the file.
    assert sorted(relative(server.output / "ui_thumbs")) == [
        "ORIG/_thumbnails/img_ORIG.png.webp",
        "ORIG/img_ORIG.png",
        "UPSCALED/_thumbnails/img_UPSCALED.jpg.webp",
        "UPSCALED/img_UPSCALED.jpg",
    ]
    shown = thumbs["executed"][-1]["output"]["images"]
    assert shown == [
        {"filename": "img_ORIG.png.webp", "subfolder": "ui_thumbs/ORIG/_thumbnails", "type": "output"},
        {"filename": "img_UPSCALED.jpg.webp", "subfolder": "ui_thumbs/UPSCALED/_thumbnails", "type": "output"},
    ]
    assert [view_file(src) for src in thumbs["imgs"]] == [
        ("ui_thumbs/ORIG/_thumbnails", "img_ORIG.png.webp"),
        ("ui_thumbs/UPSCALED/_thumbnails", "img_UPSCALED.jpg.webp"),
    ], "the img elements the node draws load the thumbnails"
    assert history_images(server, thumbs["prompt_id"]) == [
        {"filename": "img_ORIG.png", "subfolder": "ui_thumbs/ORIG", "type": "output"},
        {"filename": "img_UPSCALED.jpg", "subfolder": "ui_thumbs/UPSCALED", "type": "output"},
    ]
    assert [view_file(u) for u in thumbs["menu"]["opened"]] == [("ui_thumbs/ORIG", "img_ORIG.png")] * 2
    assert thumbs["menu"]["copied"] == [64, 48], "Copy Image copies the full image, not the 32x24 thumbnail"
    assert decoded(server.output / "ui_thumbs/ORIG/_thumbnails/img_ORIG.png.webp").shape[:2] == (24, 32)
    # The frontend lets whichever image load ends last set what the node draws: a late load of the temp previews is
    # refused, a load of the current outputs taken.
    stale = report["staleLoad"]
    assert [view_file(src) for src in stale["before"]] == [view_file(src) for src in thumbs["imgs"]]
    assert stale["afterStale"] == stale["before"], "a late load of other files must not replace the saved files"
    assert [view_file(src) for src in stale["afterCurrent"]] == [view_file(src) for src in thumbs["imgs"]]
    wait_jobs(server, daemon_up)


def view_file(src: str) -> tuple[str, str]:
    """The (subfolder, filename) a ``/view`` URL asks for (type output)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(src).query)
    assert urllib.parse.urlsplit(src).path.endswith("/view") and query["type"] == ["output"], src
    return query.get("subfolder", [""])[0], query["filename"][0]


def test_daemon_down_means_a_local_save_with_the_reason(server, env):
    stop_daemon(env["LUNA_DAEMON_SOCKET"])
    run, names = saved_files(server, cs.saver_node(save_path="down", daemon_save=True, autostart_daemon=False), "down")
    assert "Daemon save selected but daemon not available... saving locally instead. Reason:" in server.logs()
    assert [i["type"] for i in run.images()] == ["output"]
    assert names == ["ORIG/img_ORIG.webp"]


def test_daemon_down_the_local_save_writes_the_thumbnails_and_the_batchs_archive(server, env):
    assert not answers(env["LUNA_DAEMON_SOCKET"])
    extras = {"thumbnails": True, "thumbnail_size": 32, "batch_name": "down_batch", "zip_archive": True}
    saver = cs.saver_node(save_path="down_x", daemon_save=True, autostart_daemon=False, **extras)
    for _ in range(2):
        _, names = saved_files(server, saver, "down_x")
    assert names == [
        "ORIG/_thumbnails/img_ORIG.webp.webp",
        "ORIG/_thumbnails/img_ORIG_00001.webp.webp",
        "ORIG/img_ORIG.webp",
        "ORIG/img_ORIG_00001.webp",
    ]
    assert decoded(server.output / "down_x/ORIG/_thumbnails/img_ORIG.webp.webp").shape[:2] == (24, 32)
    with zipfile.ZipFile(server.output / "down_batch.zip") as z:
        assert z.testzip() is None
        assert sorted(z.namelist()) == [f"down_x/{n}" for n in names if "_thumbnails" not in n], "each image once"
    assert "Batch down_batch: 1 image(s) added to" in server.logs()


def test_disable_metadata_embeds_nothing_on_or_off(env, tmp_path):
    s = cs.ComfyServer(root=tmp_path, env=env, extra_args=("--cache-none", "--disable-metadata")).start()
    try:
        names = {}
        for daemon_save in (True, False):
            where = f"nometa_{daemon_save}"
            saver = five_slots(where, daemon_save)
            saver["9"]["inputs"]["autostart_daemon"] = True
            _, names[daemon_save] = saved_files(s, saver, where, env["LUNA_DAEMON_SOCKET"], workflow=WORKFLOW)
            for name in names[daemon_save]:
                assert metadata_of(s.output / where / name) == {}, name
        assert names[True] == names[False] and len(names[True]) == 5
    finally:
        s.stop()

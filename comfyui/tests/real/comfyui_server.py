"""The real ComfyUI server, headless on CPU, with this node pack loaded, and the graphs the tests queue on it.

``make test-comfyui`` installs ComfyUI (``prepare_comfyui.sh``) and sets ``LUNA_COMFYUI_DIR`` and
``LUNA_COMFYUI_PYTHON``; without them the real-ComfyUI tests are skipped (the stand-in tests in ``comfyui/tests``
cover the same code fast). Nothing is timed: readiness and completion are polled with a deadline that only guards
against a server that never answers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PACK = Path(__file__).resolve().parents[2]
COMFYUI_DIR = os.environ.get("LUNA_COMFYUI_DIR", "")
COMFYUI_PYTHON = os.environ.get("LUNA_COMFYUI_PYTHON", "")
SKIP_REASON = "the real ComfyUI is not installed: run `make test-comfyui` (sets LUNA_COMFYUI_DIR, LUNA_COMFYUI_PYTHON)"
START_DEADLINE_S = 240.0  # ComfyUI needs 7-17 s on an idle 2-core machine; far more under a parallel build
PROMPT_DEADLINE_S = 300.0


def available() -> bool:
    return bool(COMFYUI_DIR and COMFYUI_PYTHON and Path(COMFYUI_DIR, "main.py").is_file())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyServer:
    """One ``main.py`` process; ``root`` holds its output, user and custom-nodes directories and its log."""

    root: Path
    env: dict
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def log(self) -> Path:
        return self.root / "comfyui.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ComfyServer:
        nodes = self.root / "custom_nodes"
        nodes.mkdir(parents=True, exist_ok=True)
        (self.root / "user").mkdir(exist_ok=True)
        link = nodes / "luna_multi_saver_pack"
        if not link.exists():
            link.symlink_to(PACK, target_is_directory=True)
        config = self.root / "extra_model_paths.yaml"
        config.write_text(f"luna:\n  base_path: {nodes}\n  custom_nodes: .\n")
        args = [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port)]
        args += ["--disable-auto-launch", "--output-directory", str(self.output), "--user-directory"]
        args += [str(self.root / "user"), "--extra-model-paths-config", str(config), *self.extra_args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # a server that never became usable must not outlive the test
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                self.get("/system_stats")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ComfyUI did not answer:\n{self.log.read_text()[-4000:]}") from None
                time.sleep(0.2)
        if "LunaMultiSaver" not in self.get("/object_info/LunaMultiSaver"):
            raise RuntimeError(f"the pack did not load:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        """SIGINT, so the log is flushed (SIGTERM loses buffered print lines)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"POST {path}: {e.code} {e.read().decode(errors='replace')}") from None

    def run(self, prompt: dict, workflow: dict | None = None) -> Execution:
        """Queues an API graph (with ``workflow`` as the UI workflow ComfyUI embeds) and waits for it."""
        extra = {"extra_pnginfo": {"workflow": workflow if workflow is not None else {"nodes": [], "links": []}}}
        body = {"prompt": prompt, "client_id": uuid.uuid4().hex, "extra_data": extra}
        prompt_id = self.post("/prompt", body)["prompt_id"]
        deadline = time.monotonic() + PROMPT_DEADLINE_S
        while True:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and (entry["status"]["completed"] or entry["status"]["status_str"] == "error"):
                return Execution(entry)
            if time.monotonic() > deadline:
                raise RuntimeError(f"prompt {prompt_id} did not finish:\n{self.logs()[-4000:]}")
            time.sleep(0.05)

    def logs(self) -> str:
        """What the server printed (the node's print lines included), without waiting for the log file's flush."""
        entries = self.get("/internal/logs/raw")["entries"]
        return "".join(e["m"] for e in entries)


@dataclass
class Execution:
    """One finished prompt from ``/history``."""

    entry: dict

    @property
    def ok(self) -> bool:
        return self.entry["status"]["status_str"] == "success"

    @property
    def prompt_id(self) -> str:
        return self.entry["prompt"][1]

    def messages(self) -> dict:
        return {kind: data for kind, data in self.entry["status"]["messages"]}

    def error(self) -> str:
        return str(self.messages().get("execution_error", {}).get("exception_message", ""))

    def images(self, node_id: str = "9") -> list[dict]:
        return self.entry["outputs"].get(node_id, {}).get("images", [])

    def seconds(self) -> float:
        """The whole execution as ComfyUI records it (start to success), in seconds."""
        m = self.messages()
        return (m["execution_success"]["timestamp"] - m["execution_start"]["timestamp"]) / 1000


def source_graph(width: int = 64, height: int = 48, batch: int = 1, seed: int = 1, color: int = 0x336699) -> dict:
    """EmptyImage -> ImageAddNoise: a model-free IMAGE batch (node "2" is its output)."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": batch, "color": color},
        },
        "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": seed, "strength": 0.5}},
    }


def saver_node(**inputs) -> dict:
    """The Luna Multi Saver as node "9", image_1 from node "2", with every required input filled in."""
    base = {
        "save_path": "",
        "filename": "img",
        "daemon_save": False,
        "save_mode": "parallel",
        "quality_gate": "disabled",
        "min_quality_threshold": 0.3,
        "image_1": ["2", 0],
    }
    return {"9": {"class_type": "LunaMultiSaver", "inputs": {**base, **inputs}}}


def save_image_node(prefix: str) -> dict:
    return {"8": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}}}

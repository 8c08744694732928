"""The node's declaration (SPEC section 3): class attributes and inputs with the original names, types, defaults
and order, so workflows saved with the original node load unchanged; and the pack imports the way ComfyUI
loads it, without torch or ComfyUI."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
import textwrap

from conftest import PACK
from luna_multi_saver.node import LunaMultiSaver

REQUIRED = [
    ("save_path", "STRING", ""),
    ("filename", "STRING", "%time:YYYY_mm_dd.HH.MM.SS%_%model_name%"),
    ("daemon_save", "BOOLEAN", False),
    ("save_mode", ["parallel", "sequential"], "parallel"),
    ("quality_gate", ["disabled", "variance", "edge_density", "both"], "disabled"),
    ("min_quality_threshold", "FLOAT", 0.3),
]

OPTIONAL = (
    [("model_name", "STRING", "")]
    + [(f"image_{i}", "IMAGE", None) for i in range(1, 6)]
    + [
        (f"affix_{i}", "STRING", affix)
        for i, affix in enumerate(["ORIG", "UPSCALED", "DETAILED", "FINAL", "IMAGE5"], start=1)
    ]
    # Issue 15's formats are appended to the original choices, so saved workflows keep theirs.
    + [(f"format_{i}", ["png", "webp", "jpeg", "no save", "exr", "avif", "jxl"], "webp") for i in range(1, 6)]
    + [(f"subdir_{i}", "BOOLEAN", True) for i in range(1, 6)]
    + [
        ("png_compression", "INT", 4),
        ("lossy_quality", "INT", 90),
        ("lossless_webp", "BOOLEAN", False),
        ("embed_workflow", "BOOLEAN", True),
        ("filename_index", "INT", 0),
        ("custom_metadata", "STRING", ""),
        ("metadata", "METADATA", None),
    ]
    # Appended after the original inputs (never inserted): issue 7's auto-start.
    + [("autostart_daemon", "BOOLEAN", True)]
    # Issue 16: batch groups.
    + [("batch_name", "STRING", ""), ("thumbnails", "BOOLEAN", False), ("thumbnail_size", "INT", 256)]
    # Issue 16: S3-compatible object storage as the daemon's output root.
    + [("output_root", "STRING", "")]
    + [("zip_archive", "BOOLEAN", False)]
    # Issue 15: bit depths and EXR's input colour space.
    + [
        ("png_bit_depth", ["8-bit", "16-bit"], "8-bit"),
        ("exr_bit_depth", ["32-bit float", "16-bit half"], "32-bit float"),
        ("exr_color_space", ["sRGB", "linear"], "sRGB"),
    ]
    # Issue 15: AVIF.
    + [("avif_quality", "INT", 80), ("avif_speed", "INT", 6), ("avif_bit_depth", ["10-bit", "8-bit"], "10-bit")]
    # Issue 15: JPEG XL (always lossless).
    + [("jxl_bit_depth", ["8-bit", "16-bit"], "8-bit")]
)


def _check(section: dict, expected: list) -> None:
    assert list(section) == [name for name, _, _ in expected]
    for name, kind, default in expected:
        spec = section[name]
        assert spec[0] == kind, name
        options = spec[1] if len(spec) > 1 else {}
        assert options.get("default") == default, name


def test_class_attributes():
    assert LunaMultiSaver.CATEGORY == "Luna/Image"
    assert LunaMultiSaver.OUTPUT_NODE is True
    assert LunaMultiSaver.RETURN_TYPES == ()
    assert callable(getattr(LunaMultiSaver, LunaMultiSaver.FUNCTION))


def test_required_inputs_keep_the_original_order_types_and_defaults():
    _check(LunaMultiSaver.INPUT_TYPES()["required"], REQUIRED)


def test_daemon_toggle_labels_and_threshold_range():
    required = LunaMultiSaver.INPUT_TYPES()["required"]
    toggle = required["daemon_save"][1]
    assert (toggle["label_on"], toggle["label_off"]) == ("Async (Daemon)", "Blocking")
    threshold = required["min_quality_threshold"][1]
    assert (threshold["min"], threshold["max"], threshold["step"]) == (0.0, 1.0, 0.05)


def test_optional_inputs_keep_the_original_order_types_and_defaults():
    _check(LunaMultiSaver.INPUT_TYPES()["optional"], OPTIONAL)


def test_optional_ranges():
    optional = LunaMultiSaver.INPUT_TYPES()["optional"]
    assert (optional["png_compression"][1]["min"], optional["png_compression"][1]["max"]) == (0, 9)
    assert (optional["lossy_quality"][1]["min"], optional["lossy_quality"][1]["max"]) == (70, 100)
    assert (optional["filename_index"][1]["min"], optional["filename_index"][1]["max"]) == (0, 10000)
    assert optional["custom_metadata"][1]["multiline"] is True


def test_hidden_inputs():
    assert LunaMultiSaver.INPUT_TYPES()["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def test_the_function_takes_every_input_by_name_and_spells_out_none():
    code = LunaMultiSaver.save_images.__code__
    assert code.co_argcount == 1 and code.co_flags & inspect.CO_VARKEYWORDS, "defaults live in INPUT_TYPES only"


def test_pack_exports_only_the_mappings_and_its_web_directory_when_loaded_like_comfyui(monkeypatch):
    monkeypatch.setenv("LUNA_DAEMON_PREWARM", "0")  # loading the pack warms a daemon connection: not here
    # ComfyUI loads custom_nodes/<dir>/__init__.py as a package under the directory's name.
    spec = importlib.util.spec_from_file_location(
        "luna_multi_saver_pack", PACK / "__init__.py", submodule_search_locations=[str(PACK)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    assert module.NODE_DISPLAY_NAME_MAPPINGS == {"LunaMultiSaver": "Luna Multi Saver"}
    assert list(module.NODE_CLASS_MAPPINGS) == ["LunaMultiSaver"]
    assert module.NODE_CLASS_MAPPINGS["LunaMultiSaver"].__name__ == "LunaMultiSaver"
    assert sorted(module.__all__) == ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
    # ComfyUI serves WEB_DIRECTORY's .js files as frontend extensions (nodes.py load_custom_node).
    assert (PACK / module.WEB_DIRECTORY / "luna_multi_saver.js").is_file()


def test_importing_the_pack_imports_neither_torch_nor_comfyui_nor_shared_memory():
    script = textwrap.dedent(
        f"""
        import importlib.abc, importlib.util, sys
        BLOCKED = ("torch", "folder_paths", "comfy", "multiprocessing")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked in this test: " + name)
        sys.meta_path.insert(0, Block())
        spec = importlib.util.spec_from_file_location(
            "pack", {str(PACK / "__init__.py")!r}, submodule_search_locations=[{str(PACK)!r}]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["pack"] = module
        spec.loader.exec_module(module)
        from pack.luna_multi_saver import client, shm, local_save, node
        print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_no_module_uses_python_shared_memory():
    # multiprocessing.shared_memory registers segments with resource_tracker, which unlinks them at exit.
    for path in (PACK / "luna_multi_saver").glob("*.py"):
        for line in path.read_text().splitlines():
            assert not line.lstrip().startswith(("import multiprocessing", "from multiprocessing")), path

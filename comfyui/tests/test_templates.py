"""Templates and model-name parsing (SPEC section 4)."""

from __future__ import annotations

import datetime as dt

import pytest

from luna_multi_saver import paths, templates
from luna_multi_saver.templates import ModelInfo, Timestamp, expand, parse_model_name

# 2025-03-07 09:05:04 local time at UTC+1.
WHEN = Timestamp(
    ms=int(dt.datetime(2025, 3, 7, 8, 5, 4, tzinfo=dt.timezone.utc).timestamp() * 1000) + 123, utc_offset_s=3600
)
MODEL = parse_model_name("Illustrious/3DCG/foo_v60.safetensors")


@pytest.mark.parametrize(
    ("raw", "path", "name", "directory"),
    [
        ("Illustrious/3DCG/foo_v60.safetensors", "Illustrious/3DCG/foo_v60", "foo_v60", "Illustrious/3DCG"),
        ("Illustrious\\3DCG\\foo_v60.safetensors", "Illustrious/3DCG/foo_v60", "foo_v60", "Illustrious/3DCG"),
        ("Illustrious\\bar.GGUF", "Illustrious/bar", "bar", "Illustrious"),
        ("plain.ckpt", "plain", "plain", ""),
        ("a/b.pt", "a/b", "b", "a"),
        ("a/b.pth", "a/b", "b", "a"),
        ("a/b.bin", "a/b", "b", "a"),
        ("plain.onnx", "plain.onnx", "plain.onnx", ""),
        ("dir/model.safetensors/", "dir/model", "model", "dir"),
        ("", "", "UnknownModel", ""),
        (None, "", "UnknownModel", ""),
        ("/", "", "UnknownModel", ""),
    ],
)
def test_model_names_parse_like_the_original(raw, path, name, directory):
    assert parse_model_name(raw) == ModelInfo(path=path, name=name, dir=directory)


def test_model_name_comes_from_metadata_then_the_input():
    assert templates.model_name_source({"model_name": "a.safetensors", "model": "b"}, "c") == "a.safetensors"
    assert templates.model_name_source({"model": "b.ckpt"}, "c") == "b.ckpt"
    assert templates.model_name_source({"model_name": ""}, "c") == "c"
    assert templates.model_name_source({}, "c") == "c"
    assert templates.model_name_source(None, "c") == "c"
    assert templates.model_name_source(None, None) == ""


def test_local_time_is_utc_plus_the_offset():
    assert WHEN.local() == dt.datetime(2025, 3, 7, 9, 5, 4)
    assert WHEN.save_timestamp() == "2025_03_07_090504"


def test_now_matches_the_system_local_time():
    now = Timestamp.now()
    assert now.local() == dt.datetime.fromtimestamp(now.ms // 1000)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("%time:YYYY_mm_dd.HH.MM.SS%_%model_name%", "2025_03_07.09.05.04_foo_v60"),
        ("%time:YYYY-mm-dd%", "2025-03-07"),
        ("%date:yyyy-MM-dd hh:mm:ss%", "2025-03-07 09_05_04"),
        ("%date:yy M d h m s%", "25 3 7 9 5 4"),
        ("%date:yyy%", "yyy"),  # ComfyUI's frontend leaves an unknown run as it is
        ("out/%model_path%/%index%/", "out/Illustrious/3DCG/foo_v60/42"),
        ("%model_dir%\\x", "Illustrious/3DCG/x"),
        ("100%done %time:%", "100%done %time:%"),
        ("%unknown%_%index%", "%unknown%_42"),
        ("", ""),
    ],
)
def test_templates_expand(template, expected):
    assert expand(template, MODEL, 42, WHEN) == expected


def test_unknown_model_expands_to_unknown_model():
    assert expand("%model_name%_%model_path%", parse_model_name(""), 0, WHEN) == "UnknownModel_"


@pytest.mark.parametrize(
    ("template", "model", "expected"),
    [
        ("%date:hh:mm%/%time:HH:MM%", "m", "09_05/09_05"),
        ('%date:"<>|*?%', "m", "______"),
        ("%date:d\x01\x7f\x85%", "m", "7___"),
        ("%model_path%|%model_dir%|%model_name%", "a:b/c*d?.safetensors", "a_b/c_d_|a_b|c_d_"),
        # Separators from a template still make folders; literal text is left for the confinement checks.
        ("%date:yyyy/MM%/lit:eral", "m", "2025/03/lit:eral"),
    ],
)
def test_characters_no_file_name_can_hold_become_underscores_in_substituted_values_only(template, model, expected):
    assert expand(template, parse_model_name(model), 0, WHEN) == expected


@pytest.mark.parametrize("template", ["%date:yyyy-MM-dd hh:mm:ss%", "%time:HH:MM:SS%", "%model_name%"])
def test_what_a_template_produces_is_always_a_valid_name(template):
    paths.check_stem(expand(template, parse_model_name('a:b*"c<d>e|f?.ckpt'), 0, WHEN))


def test_literal_forbidden_characters_are_still_refused_with_the_reason():
    with pytest.raises(paths.PathRefused, match=r"':' .* is not allowed"):
        paths.check_stem(expand("a:b", MODEL, 0, WHEN))

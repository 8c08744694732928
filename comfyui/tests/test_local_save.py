"""The local save (SPEC section 4): names, counters, confinement, gates, formats and pixels."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import decoded, files_under, flat, noise, smooth, webp_chunks
from luna_multi_saver import gates, metadata, paths
from luna_multi_saver.local_save import SaveOptions, Slot, save_local
from luna_multi_saver.pixels import to_uint8
from luna_multi_saver.templates import Timestamp

WHEN = Timestamp(ms=1_741_334_704_000, utc_offset_s=0)  # 2025-03-07 08:05:04 UTC


def opts(root: Path, **kwargs) -> SaveOptions:
    kwargs.setdefault("timestamp", WHEN)
    kwargs.setdefault("filename", "img")
    return SaveOptions(output_dir=str(root), **kwargs)


# -- names and directories ----------------------------------------------------------------------------------------


def test_single_image_with_affix_subdir(tmp_path):
    saved = save_local(opts(tmp_path), [Slot(noise(), "ORIG", "png", True)])
    assert files_under(tmp_path) == ["ORIG/img_ORIG.png"]
    assert saved[0].ui() == {"filename": "img_ORIG.png", "subfolder": "ORIG", "type": "output"}


def test_batch_gets_zero_based_indices_and_subdir_off_saves_in_the_save_path(tmp_path):
    saved = save_local(opts(tmp_path, save_path="a/b"), [Slot(noise(3), "FINAL", "png", False)])
    assert files_under(tmp_path) == ["a/b/img_FINAL_0.png", "a/b/img_FINAL_1.png", "a/b/img_FINAL_2.png"]
    assert [s.batch_index for s in saved] == [0, 1, 2]
    assert {s.subfolder for s in saved} == {os.path.join("a", "b")}


def test_extensions_per_format(tmp_path):
    slots = [Slot(noise(), "P", "png", False), Slot(noise(), "W", "webp", False), Slot(noise(), "J", "jpeg", False)]
    save_local(opts(tmp_path), slots)
    assert files_under(tmp_path) == ["img_J.jpg", "img_P.png", "img_W.webp"]


def test_templates_in_save_path_and_filename(tmp_path):
    o = opts(
        tmp_path,
        save_path="%model_dir%/%time:YYYY-mm-dd%",
        filename="%time:YYYY_mm_dd.HH.MM.SS%_%model_name%_%index%",
        model_name="Illustrious/3DCG/foo_v60.safetensors",
        filename_index=7,
    )
    save_local(o, [Slot(noise(), "ORIG", "png", True)])
    assert files_under(tmp_path) == ["Illustrious/3DCG/2025-03-07/ORIG/2025_03_07.08.05.04_foo_v60_7_ORIG.png"]


def test_empty_affix_adds_no_suffix_and_no_subdir(tmp_path):
    save_local(opts(tmp_path), [Slot(noise(), "", "png", True)])
    assert files_under(tmp_path) == ["img.png"]


# -- never overwrite ----------------------------------------------------------------------------------------------


def test_collisions_get_counter_suffixes_and_nothing_is_overwritten(tmp_path):
    first = save_local(opts(tmp_path), [Slot(flat(value=0.1), "A", "png", False)])
    second = save_local(opts(tmp_path), [Slot(flat(value=0.2), "A", "png", False)])
    third = save_local(opts(tmp_path), [Slot(flat(value=0.3), "A", "png", False)])
    assert [first[0].filename, second[0].filename, third[0].filename] == [
        "img_A.png",
        "img_A_00001.png",
        "img_A_00002.png",
    ]
    assert decoded(first[0].path)[0, 0, 0] == to_uint8(np.float32(0.1))
    assert decoded(third[0].path)[0, 0, 0] == to_uint8(np.float32(0.3))


def test_two_slots_expanding_to_the_same_name_do_not_overwrite(tmp_path):
    slots = [Slot(flat(value=0.1), "X", "png", False), Slot(flat(value=0.9), "X", "png", False)]
    saved = save_local(opts(tmp_path), slots, parallel=True)
    assert sorted(s.filename for s in saved) == ["img_X.png", "img_X_00001.png"]
    values = sorted(int(decoded(s.path)[0, 0, 0]) for s in saved)
    assert values == sorted([int(to_uint8(np.float32(0.1))), int(to_uint8(np.float32(0.9)))])


def test_racing_writers_never_share_a_name(tmp_path):
    results: list[str] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        written = paths.write_new_file(str(tmp_path), "race", "bin", lambda f: f.write(bytes([i])))
        with lock:
            results.append(written.path)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 8
    assert sorted(Path(p).read_bytes()[0] for p in results) == list(range(8))
    assert files_under(tmp_path) == ["race.bin"] + [f"race_{n:05d}.bin" for n in range(1, 8)]


def test_a_failing_encoder_leaves_no_file(tmp_path):
    def broken(_f) -> None:
        raise RuntimeError("encoder broke")

    with pytest.raises(RuntimeError):
        paths.write_new_file(str(tmp_path), "x", "png", broken)
    assert files_under(tmp_path) == []


def test_an_existing_symlink_under_the_final_name_is_not_followed(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep me")
    root = tmp_path / "root"
    root.mkdir()
    (root / "img_A.png").symlink_to(outside)
    saved = save_local(opts(root), [Slot(noise(), "A", "png", False)])
    assert saved[0].filename == "img_A_00001.png"
    assert outside.read_bytes() == b"keep me"


# -- confinement --------------------------------------------------------------------------------------------------

HOSTILE = [
    "../x",
    "a/../../x",
    "/etc/x",
    "..\\x",
    "C:\\x",
    "C:x",
    "\\\\?\\x",
    "\\\\server\\share\\x",
    "con.png",
    "a/NUL",
    "lpt1",
    "a\0b",
    "a\nb",
    "x:y",
    "trailing.",
    "what?",
]


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_save_paths_are_refused_and_nothing_is_written(tmp_path, bad):
    root = tmp_path / "root"
    with pytest.raises(paths.PathRefused, match="not allowed"):
        save_local(opts(root, save_path=bad), [Slot(noise(), "A", "png", True)])
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("bad", [*HOSTILE, "a/..", "a/."])
def test_hostile_file_names_are_refused_and_nothing_is_written(tmp_path, bad):
    root = tmp_path / "root"
    with pytest.raises(paths.PathRefused, match="not allowed"):
        save_local(opts(root, filename=bad, model_name="m.safetensors"), [Slot(noise(), "", "png", False)])
    assert files_under(tmp_path) == []


def test_a_file_name_with_slashes_makes_folders_below_the_affix_folder(tmp_path):
    o = opts(tmp_path, save_path="s", filename="%model_path%", model_name="Illustrious/3DCG/foo.safetensors")
    save_local(o, [Slot(noise(), "ORIG", "png", True)])
    assert files_under(tmp_path) == ["s/ORIG/Illustrious/3DCG/foo_ORIG.png"]


def test_an_empty_file_name_becomes_timestamp_and_model(tmp_path):
    save_local(opts(tmp_path, filename="", model_name="a/b/c.pth"), [Slot(noise(), "ORIG", "png", False)])
    assert files_under(tmp_path) == ["2025_03_07_080504_c_ORIG.png"]


@pytest.mark.parametrize("bad", ["../../etc/evil.safetensors", "..\\..\\evil.ckpt", "/etc/evil.ckpt"])
def test_a_hostile_model_name_cannot_leave_the_output_dir(tmp_path, bad):
    root = tmp_path / "root"
    with pytest.raises(paths.PathRefused):
        save_local(opts(root, save_path="%model_path%", model_name=bad), [Slot(noise(), "A", "png", True)])
    assert files_under(tmp_path) == []


def test_a_drive_letter_in_a_model_name_becomes_an_underscore_and_stays_inside(tmp_path):
    root = tmp_path / "root"
    o = opts(root, save_path="%model_path%", model_name="C:\\models\\x.safetensors")
    save_local(o, [Slot(noise(), "A", "png", True)])
    assert files_under(tmp_path) == ["root/C_/models/x/A/img_A.png"]


@pytest.mark.parametrize("bad", ["..", "a/b", "con", "x:y"])
def test_hostile_affixes_are_refused(tmp_path, bad):
    with pytest.raises(paths.PathRefused):
        save_local(opts(tmp_path / "root"), [Slot(noise(), bad, "png", True)])
    assert files_under(tmp_path) == []


def test_a_symlinked_subdir_pointing_outside_is_refused(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(paths.PathRefused, match="outside the output directory"):
        save_local(opts(root, save_path="link/sub"), [Slot(noise(), "A", "png", True)])
    assert list(outside.iterdir()) == [], "nothing may be created through the link"
    assert files_under(root) == []


def test_a_symlink_inside_the_tree_pointing_inside_is_fine(tmp_path):
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    save_local(opts(root, save_path="alias"), [Slot(noise(), "A", "png", False)])
    assert files_under(root / "real") == ["img_A.png"]


def test_dot_components_are_ignored(tmp_path):
    save_local(opts(tmp_path, save_path="./a/./b/"), [Slot(noise(), "A", "png", False)])
    assert files_under(tmp_path) == ["a/b/img_A.png"]


# -- quality gates ------------------------------------------------------------------------------------------------


def test_scores_follow_the_spec_formulas():
    two_columns = np.zeros((2, 2, 3), dtype=np.uint8)
    two_columns[:, 1] = 100
    assert gates.variance_score(two_columns) == pytest.approx(2500 / 3000)
    assert gates.edge_density_score(two_columns) == pytest.approx(min(1.0, (0 + 100 / 255) / 2 / 0.05))
    checker = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)[:, :, None].repeat(3, axis=2)
    assert (gates.variance_score(checker), gates.edge_density_score(checker)) == (1.0, 1.0)
    gray = np.full((4, 4, 1), 7, dtype=np.uint8)
    assert (gates.variance_score(gray), gates.edge_density_score(gray)) == (0.0, 0.0)


def test_variance_gate_passes_ordinary_images():
    # Regression: the original compared a 0..1 variance against /3000, so `variance` failed every image.
    image = to_uint8(noise()[0])
    assert gates.judge(image, "variance", 0.3).passed


def test_threshold_is_inclusive():
    two_columns = np.zeros((2, 2, 3), dtype=np.uint8)
    two_columns[:, 1] = 100
    score = gates.variance_score(two_columns)
    assert gates.judge(two_columns, "variance", score).passed
    assert not gates.judge(two_columns, "variance", score + 1e-9).passed


@pytest.mark.parametrize(
    ("gate", "images", "discarded"),
    [
        ("variance", flat(), True),
        ("variance", noise(), False),
        ("variance", smooth(), False),
        ("edge_density", smooth(), True),
        ("edge_density", noise(), False),
        ("both", smooth(), True),
        ("both", noise(), False),
        ("disabled", flat(), False),
    ],
)
def test_gates_on_flat_noise_and_blurred_images(tmp_path, gate, images, discarded):
    saved = save_local(opts(tmp_path, quality_gate=gate, save_path="out"), [Slot(images, "ORIG", "png", True)])
    expected = "out/_discarded/ORIG/img_ORIG.png" if discarded else "out/ORIG/img_ORIG.png"
    assert files_under(tmp_path) == [expected]
    assert saved[0].discarded is discarded


def test_each_image_of_a_batch_is_judged_on_its_own(tmp_path):
    batch = np.concatenate([noise(), flat(), noise(seed=2)])
    saved = save_local(opts(tmp_path, quality_gate="variance"), [Slot(batch, "ORIG", "png", False)])
    assert [s.discarded for s in saved] == [False, True, False]
    assert files_under(tmp_path) == ["_discarded/img_ORIG_1.png", "img_ORIG_0.png", "img_ORIG_2.png"]
    assert saved[1].gate.variance == 0.0


def test_discarded_without_save_path_and_subdir(tmp_path):
    save_local(opts(tmp_path, quality_gate="both"), [Slot(flat(), "ORIG", "webp", True)])
    assert files_under(tmp_path) == ["_discarded/ORIG/img_ORIG.webp"]


def test_one_pixel_wide_images_do_not_crash_the_gate():
    line = to_uint8(noise(height=1)[0])
    assert gates.edge_density_score(line) == 1.0  # NaN -> min(1, nan) = 1, as the original and the daemon


def test_unknown_gate_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="quality_gate"):
        save_local(opts(tmp_path, quality_gate="sharpness"), [Slot(noise(), "A", "png", False)])


# -- pixels and formats -------------------------------------------------------------------------------------------


def test_conversion_is_comfyuis():
    x = np.array([0.0, 1.0, 0.5, 0.999, 1 / 255, 0.003921568, -0.2, 1.7, np.inf, -np.inf], dtype=np.float32)
    assert to_uint8(x).tolist() == [0, 255, 127, 254, 1, 0, 0, 255, 255, 0]
    assert (to_uint8(x) == np.clip(255.0 * x, 0, 255).astype(np.uint8)).all()
    u8 = np.arange(256, dtype=np.uint8)
    assert to_uint8(u8) is u8


@pytest.mark.parametrize("level", [0, 4, 9])
def test_png_pixels_are_the_same_at_every_level(tmp_path, level):
    images = noise(2)
    saved = save_local(opts(tmp_path, png_compression=level), [Slot(images, "A", "png", False)])
    for s in saved:
        assert (decoded(s.path) == to_uint8(images[s.batch_index])).all()


def test_gray_rgba_and_uint8_inputs(tmp_path):
    gray = noise(channels=1)
    rgba = noise(channels=4)
    u8 = (noise() * 255).astype(np.uint8)
    slots = [Slot(gray, "G", "png", False), Slot(rgba, "R", "png", False), Slot(u8, "U", "png", False)]
    saved = save_local(opts(tmp_path), slots)
    assert (decoded(saved[0].path) == to_uint8(gray[0])[:, :, 0]).all()
    assert (decoded(saved[1].path) == to_uint8(rgba[0])).all()
    assert (decoded(saved[2].path) == u8[0]).all()


def test_lossless_webp_keeps_pixels_and_jpeg_drops_alpha(tmp_path):
    rgba = noise(channels=4)
    slots = [Slot(rgba, "W", "webp", False), Slot(rgba, "J", "jpeg", False)]
    saved = save_local(opts(tmp_path, lossless_webp=True), slots)
    assert (decoded(saved[0].path) == to_uint8(rgba[0])).all()
    assert decoded(saved[1].path).shape == (48, 64, 3)


def test_reference_pixels_match_comfyui_png(tmp_path, reference):
    single = np.load(reference / "single_tensor.npy")
    golden = np.load(reference / "golden_tensor.npy")
    saved = save_local(opts(tmp_path), [Slot(single, "S", "png", False), Slot(golden, "G", "png", False)])
    assert (decoded(saved[0].path) == decoded(reference / "single_png_00001_.png")).all()
    assert (decoded(saved[1].path) == decoded(reference / "golden_png_00001_.png")).all()
    assert (decoded(saved[2].path) == decoded(reference / "golden_png_00002_.png")).all()


def test_reference_pixels_match_comfyui_lossless_webp(tmp_path, reference):
    single = np.load(reference / "single_tensor.npy")
    saved = save_local(opts(tmp_path, lossless_webp=True), [Slot(single, "S", "webp", False)])
    assert (decoded(saved[0].path) == decoded(reference / "single_webp_lossless_00001_.webp")).all()


def test_unknown_format_and_bad_shapes_are_errors(tmp_path):
    with pytest.raises(ValueError, match="format"):
        save_local(opts(tmp_path), [Slot(noise(), "A", "tiff", False)])
    with pytest.raises(ValueError, match="channels"):
        save_local(opts(tmp_path), [Slot(noise(channels=2), "A", "png", False)])
    assert files_under(tmp_path) == []


def test_sequential_and_parallel_give_the_same_files(tmp_path):
    slots = [Slot(noise(2), "A", "png", True), Slot(noise(1), "B", "webp", False)]
    save_local(opts(tmp_path / "seq"), slots, parallel=False)
    save_local(opts(tmp_path / "par"), slots, parallel=True)
    assert files_under(tmp_path / "seq") == files_under(tmp_path / "par")


def test_no_temp_files_are_left_behind(tmp_path):
    save_local(opts(tmp_path), [Slot(noise(3), "A", "png", False), Slot(noise(), "B", "jpeg", False)])
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def frontend_1_27_finds_exif(data: bytes) -> bool:
    """ComfyUI frontend 1.27's getWebpMetadata walk: ``8 + size`` per chunk, no RIFF padding byte skipped."""
    at = 12
    while at + 8 <= len(data):
        if data[at : at + 4] == b"EXIF":
            return True
        at += 8 + int.from_bytes(data[at + 4 : at + 8], "little")
    return False


def test_webp_exif_comes_before_the_image_data_so_frontend_1_27_finds_it_after_an_odd_chunk(tmp_path):
    # Regression (issue 13): a lossless WebP whose image chunk has an odd size restored nothing in the frontend.
    meta = metadata.JobMetadata(prompt='{"1": {}}', extra_pnginfo=[("workflow", '{"nodes": []}')])
    odd = 0
    for seed in range(8):
        root = tmp_path / str(seed)
        options = opts(root, lossless_webp=True, embed_metadata=True, metadata=meta)
        (saved,) = save_local(options, [Slot(noise(1, 13, 17 + seed, seed=seed), "ORIG", "webp", False)])
        data = Path(saved.path).read_bytes()
        kinds = [kind for kind, _ in webp_chunks(saved.path)]
        assert kinds == [b"VP8X", b"EXIF", b"VP8L"], kinds
        odd += len(dict(webp_chunks(saved.path))[b"VP8L"]) % 2
        assert frontend_1_27_finds_exif(data)
        with Image.open(saved.path) as image:
            assert image.getexif()[0x010F].startswith("workflow:"), "Pillow reads the moved EXIF"
            assert (np.asarray(image) == to_uint8(noise(1, 13, 17 + seed, seed=seed))[0]).all()
    assert odd, "no odd-sized image chunk among the sizes tried: the test proves nothing"


def test_webp_exif_first_leaves_files_without_vp8x_or_exif_alone():
    assert metadata.webp_exif_first(b"RIFF\x04\x00\x00\x00WEBP") == b"RIFF\x04\x00\x00\x00WEBP"
    assert metadata.webp_exif_first(b"not a webp") == b"not a webp"

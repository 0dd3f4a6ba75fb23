"""prn_cli.io: atomic writes, reading photos, and the --out folder guard."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from prn_cli.errors import EXIT_INVALID_INPUT, EXIT_USAGE, InvalidInputError, OutputExistsError
from prn_cli.io import (atomic_output, prepare_output_dir, read_photo, refuse_file_as_folder, write_bytes_atomic,
                        write_json_atomic, write_png_atomic, write_text_atomic)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# --------------------------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_output_writes_on_success_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "out.txt"   # the folder is created
    with atomic_output(target) as f:
        f.write("hello")
        assert not target.exists()   # readers never see a partial file
    assert target.read_text() == "hello"
    assert os.listdir(target.parent) == ["out.txt"]


@pytest.mark.parametrize("mode", ["w", "wb"])
def test_an_exception_inside_atomic_output_leaves_no_file_and_no_temporary_file(tmp_path, mode):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(target, mode) as f:
            f.write(b"partial" if "b" in mode else "partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_an_exception_keeps_the_earlier_file(tmp_path):
    target = tmp_path / "data.json"
    write_json_atomic(target, {"run": 1})
    with pytest.raises(RuntimeError):
        with atomic_output(target) as f:
            f.write("{")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"run": 1}
    assert os.listdir(tmp_path) == ["data.json"]


def test_files_get_the_permissions_of_a_plain_open(tmp_path, umask022):
    write_json_atomic(tmp_path / "a.json", {"a": 1})
    write_text_atomic(tmp_path / "a.html", "<p>x</p>\n")
    write_bytes_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_png_atomic(tmp_path / "a.png", np.zeros((4, 5, 3), dtype=np.uint8))
    with atomic_output(tmp_path / "b.txt", "w", fsync=False) as f:
        f.write("x")
    for name in ("a.json", "a.html", "a.bin", "a.png", "b.txt"):
        assert mode_of(tmp_path / name) == 0o644, name   # not mkstemp's 0600: a gallery must be readable
    os.umask(0o077)
    write_json_atomic(tmp_path / "private.json", {})
    assert mode_of(tmp_path / "private.json") == 0o600


def test_text_json_bytes_and_png_contents(tmp_path):
    write_text_atomic(tmp_path / "t.txt", "a\nb é\n")
    assert (tmp_path / "t.txt").read_bytes() == "a\nb é\n".encode("utf-8")
    write_json_atomic(tmp_path / "j.json", {"k": [1, 2]})
    assert (tmp_path / "j.json").read_text() == '{"k": [1, 2]}'
    write_bytes_atomic(tmp_path / "b.bin", b"xyz")
    assert (tmp_path / "b.bin").read_bytes() == b"xyz"
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    write_png_atomic(tmp_path / "p.png", rgb)
    with Image.open(tmp_path / "p.png") as img:
        assert img.format == "PNG" and img.mode == "RGB" and (np.asarray(img) == rgb).all()
    first = (tmp_path / "p.png").read_bytes()
    write_png_atomic(tmp_path / "p.png", rgb)
    assert (tmp_path / "p.png").read_bytes() == first   # no metadata: the bytes depend on the pixels only


def test_write_png_atomic_refuses_other_shapes_before_writing(tmp_path):
    with pytest.raises(ValueError, match="expected an"):
        write_png_atomic(tmp_path / "x.png", np.zeros((4, 5), dtype=np.uint8))
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------------------------
# reading photos


def test_a_16_bit_grey_png_keeps_its_high_byte_instead_of_turning_white(tmp_path):
    values = np.array([[0, 255, 256, 1000], [32768, 40000, 65280, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as img:
        assert img.mode.startswith("I")   # what Pillow decodes 16-bit grey PNGs to ("I;16", or "I" before 10.x)
    rgb = read_photo(tmp_path / "grey16.png")
    assert rgb.shape == (2, 4, 3) and rgb.dtype == np.uint8
    expected = (values >> 8).astype(np.uint8)
    for c in range(3):
        assert (rgb[..., c] == expected).all()
    # a 16-bit PGM and a 32-bit integer TIFF holding 16-bit values read the same
    (tmp_path / "grey16.pgm").write_bytes(b"P5\n4 2\n65535\n" + values.astype(">u2").tobytes())
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "grey32.tif")
    for name in ("grey16.pgm", "grey32.tif"):
        assert (read_photo(tmp_path / name) == rgb).all(), name


def test_a_jpeg_reads_as_writable_rgb(tmp_path):
    yy, xx = np.mgrid[:48, :64]
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=95)
    out = read_photo(tmp_path / "photo.jpg")
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8 and out.flags.writeable
    assert np.abs(out.astype(int) - rgb).mean() < 3   # lossy, but the same picture


def test_grey_palette_and_alpha_images_become_rgb(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "l.png")
    assert (read_photo(tmp_path / "l.png") == grey[..., None]).all()
    rgba = np.random.default_rng(1).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert (read_photo(tmp_path / "a.png") == rgba[..., :3]).all()
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "p.png")
    assert read_photo(tmp_path / "p.png").shape == (3, 4, 3)


@pytest.mark.parametrize("make, words", [
    (lambda p: None, ["image file is missing", "check the images folder"]),
    (lambda p: p.mkdir(), ["is a directory, not an image file"]),
    (lambda p: p.write_bytes(b"not an image at all"), ["image cannot be decoded", "corrupt"]),
    (lambda p: Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(p, format="PNG")
     or p.write_bytes(p.read_bytes()[:60]), ["image cannot be decoded", "truncated"]),
])
def test_unreadable_photos_give_one_line_naming_the_file(tmp_path, make, words):
    path = tmp_path / "photo.jpg"
    make(path)
    with pytest.raises(InvalidInputError) as err:
        read_photo(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for word in words:
        assert word in message
    assert err.value.exit_code == EXIT_INVALID_INPUT


def test_data_load_rgb_is_read_photo():
    data = pytest.importorskip("prn_cli.data")
    assert data.load_rgb is read_photo


# --------------------------------------------------------------------------------------------------------------
# the output folder guard


def test_output_guard_refuses_a_file_and_a_folder_below_a_file(tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    for out in (f, f / "sub" / "deeper"):
        with pytest.raises(InvalidInputError) as err:
            prepare_output_dir(out, overwrite=True, marker_names=["panoptic.json"])
        assert str(err.value) == f"{f}: exists and is a file; choose a folder for --out"
        with pytest.raises(InvalidInputError):
            refuse_file_as_folder(out)
    assert f.read_text() == "x"


def test_output_guard_refuses_an_earlier_result_unless_overwrite(tmp_path):
    (tmp_path / "viz.json").write_text("{}")
    with pytest.raises(OutputExistsError) as err:
        prepare_output_dir(tmp_path, overwrite=False, marker_names=["viz.json"], what="prn viz output")
    assert str(err.value) == (f"{tmp_path} already holds prn viz output (viz.json); pass --overwrite to replace "
                              "it or choose another output folder")
    assert err.value.exit_code == EXIT_USAGE
    with pytest.raises(OutputExistsError, match=r"panoptic\.json already exists; pass --force "):
        (tmp_path / "panoptic.json").write_text("{}")
        prepare_output_dir(tmp_path, overwrite=False, marker_names=["absent", "panoptic.json"], flag="--force")
    found = prepare_output_dir(tmp_path, overwrite=True, marker_names=["viz.json", "absent"])
    assert found == [tmp_path / "viz.json"]
    assert (tmp_path / "viz.json").exists()   # the guard removes nothing


def test_output_guard_accepts_a_new_or_empty_folder_and_creates_nothing(tmp_path):
    assert prepare_output_dir(tmp_path, overwrite=False, marker_names=["viz.json"]) == []
    assert prepare_output_dir(tmp_path / "new" / "out", overwrite=False, marker_names=["viz.json"]) == []
    assert not (tmp_path / "new").exists()


def test_commands_refuse_an_out_that_is_a_file(tmp_path):
    from prn_cli.panoptic import PanopticWriter, load_set
    from prn_cli.synth import SynthConfig, write_dataset
    from prn_cli.visualize import visualize

    f = tmp_path / "file"
    f.write_text("x")
    for call in (lambda: write_dataset(f, SynthConfig(n=1, width=32, height=32)),
                 lambda: PanopticWriter(f / "panoptic.json", f / "panoptic", []),
                 lambda: PanopticWriter(tmp_path / "ok" / "panoptic.json", f / "panoptic", [])):
        with pytest.raises(InvalidInputError, match="exists and is a file; choose a folder for --out"):
            call()
    summary = write_dataset(tmp_path / "data", SynthConfig(n=1, width=32, height=32, split="val"))
    with pytest.raises(InvalidInputError, match="exists and is a file"):
        visualize([("gt", load_set(summary["json"]))], f)
    assert f.read_text() == "x"


def test_importing_io_needs_neither_torch_nor_numpy_nor_pillow():
    code = ("import sys, prn_cli.io; "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------------------------
# a full disk: one line naming the file (issue 10, problem 11)


def test_a_write_the_disk_refuses_names_the_file_and_leaves_nothing(tmp_path):
    import errno

    from prn_cli.errors import OutputWriteError
    from prn_cli.io import atomic_output

    target = tmp_path / "set" / "panoptic.json"
    with pytest.raises(OutputWriteError) as err:
        with atomic_output(target) as f:
            f.write("{")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(err.value) == (f"{target}: cannot be written (No space left on device); free space on the disk, or "
                              "choose another output folder")
    assert err.value.exit_code == 1 and list(target.parent.iterdir()) == []
    # other errors are not renamed
    with pytest.raises(ValueError):
        with atomic_output(target) as f:
            raise ValueError("a bug")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_progress_file_on_a_full_device_names_it():
    from prn_cli.errors import OutputWriteError
    from prn_cli.resume import ProgressLog

    with pytest.raises(OutputWriteError, match="^/dev/full: cannot be written \\(No space left on device\\)"):
        with ProgressLog("/dev/full").open({"images": []}, resume=False) as log:
            log.write("x" * 100_000)


def test_a_full_disk_under_a_command_is_one_line_not_an_internal_error(tmp_path, monkeypatch, capsys):
    import errno

    from prn_cli.cli import app
    from prn_cli.cli._errors import run_app

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("prn_cli.io.os.fsync", full)
    code = run_app(app, ["synth", "--out", str(tmp_path / "d"), "--n", "1", "--size", "32x32"], debug=lambda: False)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "internal error" not in lines[0]
    assert lines[0].startswith(f"error: {tmp_path / 'd' / 'annotations'}") and "cannot be written" in lines[0]
    assert not list((tmp_path / "d").rglob("*.json"))


# --------------------------------------------------------------------------------------------------------------
# EXIF orientation, applied as detectron2's read_image does (issue 10, problem 12)

#: what each EXIF orientation asks a viewer to do to the stored grid (the TIFF/EXIF specification)
UPRIGHT = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, -1)[::-1],
           8: lambda a: np.rot90(a, 1)}


def save_with_orientation(path, rgb, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, exif=exif)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_photo_turns_a_photo_upright_by_its_exif_orientation(tmp_path, orientation):
    rgb = np.random.default_rng(orientation).integers(0, 255, (3, 5, 3), dtype=np.uint8)
    photo = save_with_orientation(tmp_path / "p.png", rgb, orientation)
    got = read_photo(photo)
    assert np.array_equal(got, UPRIGHT[orientation](rgb)) and got.flags.writeable

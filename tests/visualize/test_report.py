"""``prn report``: the folder it writes, the numbers in it, and the page as a real browser renders it."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import CATEGORIES, scene, write_set
from prn_cli.refine import compare_segmentations
from prn_cli.visualize.colors import category_color
from prn_cli.visualize.report import changed_pixels, segment_runs, write_report


def _decode_runs(text: str, shape) -> np.ndarray:
    pairs = np.frombuffer(base64.b64decode(text), dtype="<u2").reshape(-1, 2)
    return np.repeat(pairs[:, 0], pairs[:, 1]).reshape(shape)


def test_segment_runs_round_trip_long_runs_and_unlisted_ids():
    ids = np.zeros((300, 400), dtype=np.uint32)
    ids[:200] = 7                       # one run of 80000 pixels: longer than a uint16 length
    ids[250:, 10:20] = 9
    ids[0, 0] = 5                       # not listed: drawn as void
    decoded = _decode_runs(segment_runs(ids, [9, 7]), ids.shape)
    expected = np.where(ids == 9, 1, np.where(ids == 7, 2, 0))
    expected[0, 0] = 0
    assert np.array_equal(decoded, expected)


def test_changed_pixels_are_refines_pixels_changed():
    base, segs = scene()
    base_cats = {s["id"]: s["category_id"] for s in segs}
    refined = base.copy()
    refined[14:20, 3:9] = 1002                               # the square absorbed by grass
    refined[0:3] = 0                                         # three rows of sky left void
    refined_cats = dict(base_cats)
    refined_cats[12] = 1                                     # the disc relabelled
    mask = changed_pixels(base, base_cats, refined, refined_cats)
    expected = compare_segmentations(base, base_cats, refined, refined_cats)["pixels_changed"]
    assert mask.sum() == expected == 36 + 3 * 32 + int((base == 12).sum())
    assert mask[15, 5] and mask[0, 0] and not mask[10, 20]


def _make_inputs(tmp_path: Path):
    """GT of three images, a base equal to it, and a refined set that gives image 2's square to the grass (the
    PQ deltas: 0, negative, 0), and one grey photo per image."""
    from PIL import Image

    ids, segs = scene()
    lost = ids.copy()
    lost[ids == 11] = 1002
    gt = write_set(tmp_path / "gt.json", tmp_path / "gt", [(ids, segs)] * 3)
    base = write_set(tmp_path / "base.json", tmp_path / "base", [(ids, segs)] * 3)
    refined = write_set(tmp_path / "refined.json", tmp_path / "refined",
                        [(ids, segs), (lost, [s for s in segs if s["id"] != 11]), (ids, segs)])
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(1, 4):
        Image.fromarray(np.full(ids.shape + (3,), 40 * k, dtype=np.uint8)).save(photos / f"{k:06d}.jpg")
    return gt, base, refined, photos


def test_write_report_folder_numbers_and_page(tmp_path):
    gt, base, refined, photos = _make_inputs(tmp_path)
    out = tmp_path / "report"
    summary = write_report(gt, [base, refined], out, images_dir=photos, names=["base", "refined"], workers=0)
    assert summary["images"] == 3 and summary["sets"] == ["base", "refined"]
    manifest = json.loads((out / "report.json").read_text())
    deltas = [im["delta"] for im in manifest["images"]]
    ids, _ = scene()
    grass = int((ids == 1002).sum())
    grass_iou = grass / (grass + 36)                         # the refined grass also holds the 36 square pixels
    assert deltas[0] == deltas[2] == 0.0 and deltas[1] == pytest.approx((2 + grass_iou + 0) / 4 - 1, abs=1e-12)
    for im in manifest["images"]:
        for f in im["files"]:
            assert (out / f).is_file(), f
    assert manifest["images"][1]["changed_pixels"] == 36
    page = (out / "index.html").read_text()
    # worst first without any script: image 2 leads
    assert page.index('data-order="1"') < page.index('data-order="0"') < page.index('data-order="2"')
    assert "http://" not in page and "https://" not in page and "<link" not in page
    for cat in CATEGORIES:
        r, g, b = category_color(cat)
        assert f"rgb({r}, {g}, {b})" in page and cat["name"] in page
    # the refined square of image 2 is gone; its GT square is "missed" (absorbed by grass)
    data = json.loads(page.split('id="prn-data">')[1].split("</script>")[0])
    gt_tile = data["images"][1]["tiles"][-1]
    square = next(s for s in gt_tile["segments"] if s[0] == 11)
    assert square[:3] == [11, 1, 36]
    assert square[3] == [["matched", 11, 1.0, 11, 1.0], ["missed", None, None, 1002, 36 / (grass + 36)]]
    decoded = _decode_runs(gt_tile["runs"], (24, 32))
    assert gt_tile["segments"][decoded[15, 5] - 1][0] == 11 and decoded[ids == 0].sum() == 0


def test_write_report_refuses_an_earlier_report_unless_overwrite(tmp_path):
    from prn_cli.errors import OutputExistsError

    gt, base, refined, photos = _make_inputs(tmp_path)
    out = tmp_path / "report"
    write_report(gt, [base], out, workers=0)
    with pytest.raises(OutputExistsError):
        write_report(gt, [base], out, workers=0)
    (out / "tiles" / "stale.png").write_bytes(b"x")
    write_report(gt, [base, refined], out, workers=0, overwrite=True, images_dir=photos)
    assert not (out / "tiles" / "stale.png").exists() and (out / "tiles" / "000002" / "changes.png").is_file()


# --------------------------------------------------------------------------------------------------------------
# in a real browser


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,900"):
        options.add_argument(arg)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


@pytest.mark.slow
def test_report_in_headless_chromium_sorts_filters_hovers_and_toggles(tmp_path):
    gt, base, refined, photos = _make_inputs(tmp_path)
    out = tmp_path / "report"
    write_report(gt, [base, refined], out, images_dir=photos, names=["base", "refined"], workers=0)
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = _browser()
    try:
        driver.get((out / "index.html").resolve().as_uri())
        order = lambda: [c.get_attribute("data-order") for c in driver.find_elements(By.CSS_SELECTOR, ".card")]
        assert order() == ["1", "0", "2"]                        # worst delta first
        legend = driver.find_elements(By.CSS_SELECTOR, "#legend li")
        assert [li.text.split()[0] for li in legend] == [c["name"] for c in CATEGORIES]
        assert all(li.is_displayed() for li in legend)
        swatch = legend[0].find_element(By.CSS_SELECTOR, ".swatch").value_of_css_property("background-color")
        assert swatch.replace(" ", "").startswith("rgba(200,30,30") or swatch.replace(" ", "") == "rgb(200,30,30)"

        Select(driver.find_element(By.ID, "sort")).select_by_value("delta-desc")
        assert order() == ["0", "2", "1"]
        Select(driver.find_element(By.ID, "sort")).select_by_value("image")
        assert order() == ["0", "1", "2"]

        legend[0].click()                                        # only images with a square (all three)...
        assert driver.find_element(By.ID, "shown").text == "showing 3 of 3"
        Select(driver.find_element(By.ID, "class")).select_by_value("1")
        visible = [c.get_attribute("data-order") for c in driver.find_elements(By.CSS_SELECTOR, ".card")
                   if c.is_displayed()]
        assert visible == ["0", "1", "2"]

        change = driver.find_elements(By.CSS_SELECTOR, ".card[data-order='1'] img.changes")[0]
        assert not change.is_displayed()
        driver.find_element(By.ID, "changes").click()
        assert change.is_displayed()

        # hover the GT square of image 2 (rows 14-19, columns 3-8 of 24x32, drawn 256 px wide)
        frame = driver.find_elements(By.CSS_SELECTOR, ".card[data-order='1'] .frame[data-hover]")[-1]
        scale = frame.size["width"] / 32
        ActionChains(driver).move_to_element_with_offset(
            frame, int((5.5 - 16) * scale), int((16.5 - 12) * scale)).perform()
        tip = driver.find_element(By.ID, "tip")
        assert tip.is_displayed()
        assert tip.text.splitlines() == ["ground truth: square (thing)", "id 11, area 36 px",
                                         "base: matched, matches segment 11, IoU 1.000",
                                         "refined: missed, best overlap segment 1002, IoU 0.101"]
        # the same pixel in the base tile: matched, IoU 1
        frame = driver.find_elements(By.CSS_SELECTOR, ".card[data-order='1'] .frame[data-hover]")[0]
        ActionChains(driver).move_to_element_with_offset(
            frame, int((5.5 - 16) * scale), int((16.5 - 12) * scale)).perform()
        assert tip.text.splitlines()[0] == "base: square (thing)"
        assert tip.text.splitlines()[2] == "matched, matches GT segment 11, IoU 1.000"

        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == []
    finally:
        driver.quit()

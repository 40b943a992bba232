"""report.html in a real browser: headless Chromium (Debian's chromium and chromium-driver, which the test
setup installs) opens the page from the artifacts folder of a hand-built 3-seed study, every image on it
loads (checked through the page's DOM), the configuration table has a row per configuration and sorts by a
click. The screenshot is kept in test-artifacts/report_page.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from heartjobs.report import write_report

from .test_report import _run, specs  # noqa: F401 (specs: the fixture)

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts"
BROKEN_IMAGES = "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromedriver is missing: make test installs Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def _study(artifacts: Path, specs) -> None:  # noqa: F811
    """Two dcgan configurations x three seeds, each run with a sample grid and the real grid."""
    for seed, fids in enumerate(([290.0, 288.0, 289.0], [280.0, 282.0, 281.0], [295.0, 297.0, 296.0])):
        suffix = f"_s{seed}" if seed else ""
        _run(artifacts, specs(f"dcgan_default{suffix}", "dcgan", seed=seed), fids=fids)
        variant = specs(f"dcgan_lr0.0001{suffix}", "dcgan", lr=0.0001, seed=seed)
        _run(artifacts, variant, fids=[f - 60 for f in fids])


def test_the_study_page_loads_every_image_and_has_a_sortable_row_per_configuration(tmp_path, specs, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    artifacts = tmp_path / "artifacts"
    _study(artifacts, specs)
    write_report(artifacts)
    page = artifacts / "report.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing from a network

    browser.get(page.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    images = browser.execute_script("return Array.from(document.images).map(i => i.getAttribute('src'))")
    # 2 configurations x (3 seeds + the real grid), the best grids, FID vs lr, the dcgan loss curves
    assert len(images) == 8 + 3, images
    assert browser.execute_script(BROKEN_IMAGES) == []
    rows = browser.find_elements(By.CSS_SELECTOR, "#configurations tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == ["default", "lr = 0.0001"]
    assert [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows] == ["3", "3"]  # runs over seeds
    assert "p " in rows[1].find_elements(By.TAG_NAME, "td")[8].text  # Welch's p beside the variant

    header = browser.find_elements(By.CSS_SELECTOR, "#configurations th")[4]  # FID
    header.click()  # ascending: the lower FID (lr = 0.0001) first
    rows = browser.find_elements(By.CSS_SELECTOR, "#configurations tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == ["lr = 0.0001", "default"]

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(height + 100, 8000))
    SCREENSHOTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "report_page.png"))

    # the check can fail: a sample grid gone from a run folder is a broken image on the page
    (artifacts / "dcgan_lr0.0001_s2" / "v0001" / "samples" / "epoch_0002.png").unlink()
    browser.get(page.as_uri())
    broken = browser.execute_script(BROKEN_IMAGES)
    assert [Path(src).name for src in broken] == ["epoch_0002.png"] and "dcgan_lr0.0001_s2" in broken[0]

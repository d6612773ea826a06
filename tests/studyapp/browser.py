"""Helpers (no tests here) for the Chromium tests: launching, accessibility checks with axe-core, keyboard-only
steps, the pets study made of real photos, screenshots for docs/participants.md."""

import csv
import os
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from PIL import Image

from studyapp.models import Study
from studyapp.services.datasets import dataset_import
from tests.factories import PET_BREEDS, make_dataset, make_study

CHROMIUM = {
    "executable_path": "/usr/bin/chromium",
    "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    "headless": True,
}
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
ROOT = Path(__file__).resolve().parents[2]
SHARED_PETS = ROOT.parent / "shared" / "data" / "oxford_pets"
SCREENSHOTS = ROOT / "docs" / "img"

_axe = Axe()


def serious_violations(page, where: str) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now, one line each."""
    results = _axe.run(page).response
    return [f"{where}: {v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
            for v in results["violations"] if v["impact"] in ("serious", "critical")]


def tab_to(page, selector: str, *, limit: int = 200, backwards: bool = False) -> None:
    """Press Tab (or Shift+Tab) until the element matching `selector` has the focus."""
    for _ in range(limit):
        if page.evaluate("s => !!document.activeElement && document.activeElement.matches(s)", selector):
            return
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
    raise AssertionError(f"Tab never reached {selector}")


def wait_ready(page) -> None:
    """Until the trial's images are decoded and its clock runs."""
    page.wait_for_selector('#trial-form[data-state="ready"][data-clock="running"]')


def pets_study(tmp_path: Path, **fields) -> Study:
    """The demo's classes: the 37 pet breeds, with real photos from ../shared/data when it is there (two shots
    and one test image per breed), else generated ones."""
    if (SHARED_PETS / "manifest.csv").is_file():
        rows = list(csv.DictReader((SHARED_PETS / "manifest.csv").open()))
        per_breed: dict[str, list[str]] = {}
        for row in rows:
            if row["split"] == "trainval":
                per_breed.setdefault(row["label_name"], []).append(row["filename"])
        manifest = tmp_path / "pets.csv"
        with manifest.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["filename", "label_name", "split"])
            for breed in sorted(per_breed):
                for n, filename in enumerate(sorted(per_breed[breed])[:3]):
                    writer.writerow([filename, breed, "test" if n == 2 else "train"])
        dataset = dataset_import(name="Pets (browser test)", path=manifest, fmt="csv",
                                 images_root=SHARED_PETS / "images").dataset
    else:
        dataset = make_dataset(n_classes=37, class_names=PET_BREEDS, train_per_class=2, test_per_class=1)
    return make_study(dataset=dataset, title="Pets", **fields)


def screenshot(page, folder: Path, name: str) -> Path:
    """A PNG of the page as it is; with UPDATE_DOC_SCREENSHOTS=1 also copied to docs/img/ (the committed ones
    that docs/participants.md shows), else only kept in the test's folder."""
    path = folder / name
    page.screenshot(path=str(path))
    if os.environ.get("UPDATE_DOC_SCREENSHOTS") == "1":
        # Small enough to commit: at most 800 px wide, 128 colours.
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        image = Image.open(path).convert("RGB")
        if image.width > 800:
            image = image.resize((800, round(image.height * 800 / image.width)), Image.Resampling.LANCZOS)
        image.quantize(colors=128).save(SCREENSHOTS / name, optimize=True)
    return path

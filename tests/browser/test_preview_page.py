"""The preview page in a real browser (Debian's Chromium, headless, driven by Playwright over the DevTools protocol).

Why a browser: the boxes, the slider, the regrouping and the counts are drawn by the page's script; only a browser
says whether what a person sees matches the data. The page is rendered by the real previews activity from a preview
sample written by the real sampler into Azurite, then served over HTTP from a folder (as the static website serves
it), so canvases are same-origin and their pixels can be read. A phone-size screenshot is kept under
``demo-output/`` (CI keeps that folder as an artifact).
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import random
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from activities.previews import CUT_SHORT_NOTE, PAGE_SIZE, THUMB_WIDTH, run_previews
from adapters.blobs import BlobStore, service_client
from adapters.preview_folders import existing_preview_folder
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.formats.previewsample import PreviewSampler

CHROMIUM = "/usr/bin/chromium"
# The flags the workplace's probe uses: without the background-networking ones Chromium dials out at every start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "demo-output"
THRESHOLD = 0.2
RED = (221, 34, 34)  # the page's colour for category "1" (#d22)


def _jpeg(w: int = 800, h: int = 600, truncate: bool = False) -> bytes:
    from PIL import Image

    im = Image.new("RGB", (w, h), (40, 120, 60))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    return data[: len(data) // 2] if truncate else data


def _rendered(store: BlobStore, settings: Settings, task_id: str, name: str, tmp_path: Path) -> Path:
    """The task's preview pages rendered by the real activity, copied from the website container into ``tmp_path``
    (as the static website serves them); the page's folder."""
    run_previews(task_id, "MDV5A", name, settings, store)
    folder = existing_preview_folder(store, settings, task_id)
    assert folder
    for blob in store.list_names(settings.web_container, folder + "/"):
        path = tmp_path / blob
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.read_bytes(settings.web_container, blob))
    return tmp_path / folder


def _entries() -> list[dict[str, Any]]:
    rng = random.Random(7)
    out: list[dict[str, Any]] = []
    for i in range(40):
        top = [0.95, 0.6, 0.3, 0.15, 0.05][i % 5]
        dets = [{"category": "1", "conf": top, "bbox": [0.25, 0.25, 0.5, 0.5]}]
        if i % 10 == 0:
            dets.append({"category": "2", "conf": 0.8, "bbox": [0.05, 0.05, 0.1, 0.2]})
        if rng.random() < 0.3:
            dets.append({"category": "3", "conf": round(top / 2, 3), "bbox": [0.6, 0.6, 0.2, 0.2]})
        out.append({"file": f"cam{i % 2}/img{i:03d}.jpg", "detections": dets})
    # tops between the slider's steps: a request's threshold of 0.005 or 0.1555 must not become the step's 0.01, 0.16
    for k, top in enumerate((0.007, 0.158, 0.1558, 0.1552)):
        out.append({"file": f"cam1/between{k}.jpg", "detections": [{"category": "1", "conf": top,
                                                                    "bbox": [0.3, 0.3, 0.2, 0.2]}]})
    out.append({"file": "cam0/truncated.jpg", "detections": [{"category": "1", "conf": 0.9,
                                                              "bbox": [0.1, 0.1, 0.3, 0.3]}]})
    out.append({"file": "cam1/broken.jpg", "failure": "Failure image access", "detections": None,
                "failure_kind": "permanent", "failure_reason": "undecodable"})
    return out


def _repeats(n: int) -> dict[str, Any]:
    locations = [{"id": f"r{k + 1:05d}", "folder": "cam0", "category": "1", "bbox": [0.25, 0.25, 0.5, 0.5],
                  "count": 40 - k, "conf_min": 0.3, "conf_max": 0.6,
                  "files": [f"cam0/img{j:03d}.jpg" for j in range(0, 8, 2)]} for k in range(n)]
    return {"task_id": "t", "locations": locations}


@pytest.fixture
def page_folder(storage_connection: str, unique_name: str, tmp_path: Path) -> tuple[Path, list[dict[str, Any]], int]:
    """The rendered page, copied out of Azurite into a folder; the entries it was made from; its repeat count."""
    return _render(storage_connection, unique_name, tmp_path, THRESHOLD)


def _render(storage_connection: str, unique_name: str, tmp_path: Path,
            threshold: float) -> tuple[Path, list[dict[str, Any]], int]:
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "s",
                                  "TRAPBATCH_WEB_CONTAINER": unique_name + "w"})
    store = BlobStore(service_client(storage_connection))
    source = unique_name
    store.ensure_container(source)
    store.ensure_container(settings.container)
    entries = _entries()
    for e in entries:
        store.write_bytes(source, e["file"], _jpeg(truncate=e["file"].endswith("truncated.jpg")))
    task_id = "browsertask"
    sampler = PreviewSampler(task_id, threshold)
    for e in entries:
        sampler.add(e)
    sample = {**sampler.result(), "images": len(entries), "detection_categories": {"1": "animal", "2": "person",
                                                                                  "3": "vehicle"},
              "info": {"detection_completion_time": "2026-12-01T00:00:00", "trapbatch": {"container": source},
                       "failure_reasons": {"download": 1, "undecodable": 2}}}
    store.write_json(settings.container, layout.preview_sample_blob(task_id), sample)
    places = PAGE_SIZE + 6
    store.write_json(settings.container, layout.repeats_blob(task_id), _repeats(places))
    # the merge's list of photos cut short (fanin.write_damaged): the truncated sample, and one the page does not show
    store.write_bytes(settings.container, layout.damaged_blob(task_id),
                      b"file\r\ncam0/truncated.jpg\r\ncam9/not-sampled.jpg\r\n", "text/csv")
    return _rendered(store, settings, task_id, "browser check", tmp_path), entries, places


@pytest.fixture
def served(page_folder: tuple[Path, list[dict[str, Any]], int]) -> Iterator[tuple[str, list[dict[str, Any]], int]]:
    root, entries, places = page_folder
    with _serve(root) as url:
        yield url, entries, places


@contextlib.contextmanager
def _serve(root: Path) -> Iterator[str]:
    """The folder over HTTP, as the static website serves it; the page's address."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def _top(entry: dict[str, Any]) -> float:
    return max((d["conf"] for d in entry.get("detections") or []), default=0.0)


def _expected_drawn(entry: dict[str, Any], threshold: float, near: bool) -> list[list[Any]]:
    """The boxes the page must draw for an entry: those at or above the threshold; near-miss cards also draw boxes
    from the near-miss floor up (dashed)."""
    floor = 0.1 if near else threshold
    return [[d["category"], d["conf"]] for d in entry["detections"] if d["conf"] >= threshold or d["conf"] >= floor]


def _counts(entries: list[dict[str, Any]], threshold: float) -> dict[str, int]:
    ok = [e for e in entries if e.get("failure") is None]
    return {"detections": sum(_top(e) >= threshold for e in ok),
            "near_misses": sum(0.1 <= _top(e) < threshold for e in ok),
            "empty": sum(_top(e) < min(0.1, threshold) for e in ok)}


def _kind_counts(entries: list[dict[str, Any]], threshold: float) -> dict[str, int]:
    """The detections' images by the one kind they show at the threshold, or "several"."""
    out = {"1": 0, "2": 0, "3": 0, "several": 0}
    for e in entries:
        kinds = {d["category"] for d in e.get("detections") or [] if d["conf"] >= threshold}
        if kinds:
            out[kinds.pop() if len(kinds) == 1 else "several"] += 1
    assert out["several"] and out["1"]  # the data must hold both kinds of image
    return out


def test_the_preview_page_draws_what_the_data_says_and_follows_the_slider(
        served: tuple[str, list[dict[str, Any]], int]) -> None:
    if not Path(CHROMIUM).exists() or shutil.which("node") is None:
        pytest.fail("Chromium is needed for the browser test: `make setup-test` installs Debian's chromium package "
                    "(apt-get install chromium)", pytrace=False)
    from playwright.sync_api import sync_playwright

    url, entries, places = served
    by_file = {e["file"]: e for e in entries}
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function("() => document.querySelectorAll('.grid canvas').length > 0 && "
                                   "[...document.querySelectorAll('.grid canvas')].every(c => c.id in "
                                   "window.trapbatchDrawn)", timeout=60_000)

            # a phone shows the page at full scale: no sideways scrolling at 390 px
            wide = page.evaluate("() => [...document.querySelectorAll('body *')].filter(e => "
                                 "e.getBoundingClientRect().right > 391 || e.scrollWidth > e.clientWidth + 1).slice(0, 5).map(e => "
                                 "e.outerHTML.slice(0, 80) + e.scrollWidth + '/' + e.clientWidth)")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, wide
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "preview-phone.png"), full_page=False)

            for threshold in (THRESHOLD, 0.5, 0.1):
                renders = page.evaluate("t => { const s = document.getElementById('thr'); s.value = String(t); "
                                        "const n = window.trapbatchRenders; s.dispatchEvent(new Event('input')); "
                                        "return n; }", threshold)
                # the slider renders on the next animation frame: wait for that render and its images
                page.wait_for_function("n => window.trapbatchRenders > n && window.trapbatchRendered === "
                                       "+document.getElementById('thr').value && [...document.querySelectorAll("
                                       "'.grid canvas')].every(c => c.id in window.trapbatchDrawn)",
                                       arg=renders, timeout=60_000)
                shown = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.grid')].map(g =>
                    [g.dataset.section, [...g.querySelectorAll('figure')].map(f => ({
                        file: f.querySelector('figcaption').firstChild.textContent,
                        canvases: [...f.querySelectorAll('canvas')].map(c => c.id)}))]))""")
                drawn = page.evaluate("window.trapbatchDrawn")
                # each sampled image sits in the group its top confidence gives at this threshold ...
                for section in ("detections", "near_misses", "empty"):
                    for fig in shown[section]:
                        entry = by_file[fig["file"]]
                        top = _top(entry)
                        assert {"detections": top >= threshold, "near_misses": 0.1 <= top < threshold,
                                "empty": top < min(0.1, threshold)}[section], (section, fig)
                        # ... and its canvas shows exactly the boxes the data holds at this threshold
                        for cid in fig["canvases"]:
                            assert sorted(drawn[cid]) == sorted(_expected_drawn(entry, threshold,
                                                                                section == "near_misses")), cid
                            # ... and says so to a screen reader: an image named by its file and its boxes
                            name = page.evaluate("id => { const c = document.getElementById(id); "
                                                 "return [c.getAttribute('role'), c.getAttribute('aria-label')]; }",
                                                 cid)
                            assert name[0] == "img" and name[1].startswith(fig["file"] + ": "), name
                            assert name[1].count(" 0.") == len(drawn[cid]) or name[1].endswith("no boxes"), name
                totals = page.evaluate("Object.fromEntries([...document.querySelectorAll('h2 .total')].map("
                                       "e => [e.dataset.section, +e.textContent]))")
                want = _counts(entries, threshold)
                assert {k: totals[k] for k in want} == want, threshold
                assert totals["failures"] == 1
                # the kind chips count the detections by the kinds they show, at the sample's threshold only
                kinds = page.evaluate("Object.fromEntries([...document.querySelectorAll('.kind-total')].map("
                                      "e => [e.dataset.category, e.textContent]))")
                assert kinds == ({k: f" ({n})" for k, n in _kind_counts(entries, threshold).items()}
                                 if threshold == THRESHOLD else {k: "" for k in kinds}), threshold
                # each heading's unit follows its count as the slider moves ("1 image", "0 images")
                units = page.evaluate("Object.fromEntries([...document.querySelectorAll('h2 .unit')].map("
                                      "e => [e.dataset.section, e.textContent]))")
                assert {k: units[k] for k in want} == {k: "image" if n == 1 else "images" for k, n in want.items()}
                assert units["failures"] == "image"

            # the pixels: the animal box of the most confident image is drawn in its colour at threshold 0.1
            first = next(f for f in shown["detections"] if _top(by_file[f["file"]]) == 0.95 and f["canvases"])
            pixel = page.evaluate("""id => { const c = document.getElementById(id);
                const g = c.getContext('2d'); const x = Math.round(c.width * 0.25), y = Math.round(c.height * 0.6);
                return [...g.getImageData(x, y, 1, 1).data].slice(0, 3); }""", first["canvases"][0])
            assert all(abs(a - b) <= 40 for a, b in zip(pixel, RED)), pixel

            # a failed image's caption says why it failed, as the failures section promises ("says which")
            caption = page.evaluate("document.querySelector('#failures figcaption .failure').textContent")
            assert caption == " Failure image access (undecodable)", caption

            # the truncated JPEG got a picture (loaded with grey fill, as the worker loads it)
            assert any(f["file"] == "cam0/truncated.jpg" and f["canvases"] for f in shown["detections"])

            # every repeated place is listed, a page at a time, several examples each
            assert page.locator("#repeats figure").count() == min(places, PAGE_SIZE)
            assert page.locator("#repeats figure").first.locator("canvas").count() == 3
            page.locator(".pager[data-section='repeats'] button", has_text="2").click()
            assert page.locator("#repeats figure").count() == places - PAGE_SIZE
            assert page.locator("#repeats input.keep").count() == places - PAGE_SIZE
            # a long list's pager offers the first and last pages and those near the current one, not one per page
            pages = page.evaluate("[0, 1, 5, 9].map(p => pagerPages(p, 10).map(x => x === null ? '-' : x + 1)"
                                  ".join(' '))")
            assert pages == ["1 2 3 - 10", "1 2 3 4 - 10", "1 - 4 5 6 7 8 - 10", "1 - 8 9 10"], pages
            # the request names the places ticked as real animals (all others go), whatever the list's length
            command = page.evaluate("document.getElementById('rde-request').textContent")
            assert '"remove":"all"' in command and '"keep"' not in command, command
            page.locator("#repeats input.keep").first.check()
            command = page.evaluate("document.getElementById('rde-request').textContent")
            body = json.loads(command.split("-d '", 1)[1].rsplit("'", 1)[0])
            assert body["keep"] == [f"r{PAGE_SIZE + 1:05d}"] and "remove" not in body, command

            # a thumbnail opens the larger rendering, with the boxes drawn on it; from the keyboard too
            page.locator("#detections figure a").first.focus()
            page.keyboard.press("Enter")
            page.wait_for_function("() => 'large-canvas' in window.trapbatchDrawn", timeout=60_000)
            assert page.evaluate("document.getElementById('large').open")
            page.keyboard.press("Escape")
            assert not page.evaluate("document.getElementById('large').open")
            del_drawn = "() => { delete window.trapbatchDrawn['large-canvas']; }"
            page.evaluate(del_drawn)
            page.locator("#detections figure canvas").first.click()
            page.wait_for_function("() => 'large-canvas' in window.trapbatchDrawn", timeout=60_000)
            assert page.evaluate("document.getElementById('large-canvas').width") > THUMB_WIDTH
            assert errors == [], errors
        finally:
            browser.close()


def test_the_page_embeds_every_repeated_place_and_the_request_covers_unticked_ones(
        page_folder: tuple[Path, list[dict[str, Any]], int]) -> None:
    root, _, places = page_folder
    html = (root / "index.html").read_text()
    data = json.loads(html.split("const SECTIONS = ", 1)[1].split(";\n", 1)[0])
    assert [it["location"] for it in data["repeats"]] == [f"r{k + 1:05d}" for k in range(places)]
    assert all(len(it["examples"]) == 3 for it in data["repeats"])
    assert '<meta name="viewport"' in html
    # the failures section counts them all by reason, and says which a re-run retries
    failures = html.split('<section id="failures">', 1)[1].split("</section>", 1)[0]
    assert "By reason: undecodable 2, download 1" in failures
    assert "download: the task&#39;s request posted again with &#34;only_new&#34;: true (a re-run) runs these images " \
        "again" in failures
    assert "undecodable: these stay failed however often they run" in failures
    # the photos cut short: the page counts them, and the picture of the one it shows says so (a grey lower half
    # must not pass for a whole photo)
    damaged = html.split('<p class="muted" id="damaged">', 1)[1].split("</p>", 1)[0]
    damaged = " ".join(damaged.split())
    assert damaged.startswith("Cut short: 2 photos ended before their") and "damaged.csv" in damaged, damaged
    notes = {it["file"]: it.get("note") for it in data["detections"]}
    assert notes["cam0/truncated.jpg"] == CUT_SHORT_NOTE
    assert not any(note for file, note in notes.items() if file != "cam0/truncated.jpg")
    # ... "the failure beside each image says which": MegaDetector's one string for every reason, and the reason
    assert [(it["failure"], it["failure_reason"]) for it in data["failures"]] == [("Failure image access",
                                                                                  "undecodable")]


def _chromium() -> None:
    if not Path(CHROMIUM).exists() or shutil.which("node") is None:
        pytest.fail("Chromium is needed for the browser test: `make setup-test` installs Debian's chromium package "
                    "(apt-get install chromium)", pytrace=False)


@pytest.mark.parametrize("threshold", [0.005, 0.1555])
def test_the_page_opens_at_the_requests_threshold_between_the_sliders_steps(
        storage_connection: str, unique_name: str, tmp_path: Path, threshold: float) -> None:
    """The counts, groups and boxes the page opens with are those of the request's threshold (the CSV's), not of
    the nearest slider step: a range input snaps its value to its step, and the page read the threshold from it."""
    _chromium()
    from playwright.sync_api import sync_playwright

    root, entries, _ = _render(storage_connection, unique_name, tmp_path, threshold)
    by_file = {e["file"]: e for e in entries}
    with _serve(root) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("() => [...document.querySelectorAll('.grid canvas')].every(c => c.id in "
                                   "window.trapbatchDrawn) && window.trapbatchRenders > 0", timeout=60_000)
            assert page.evaluate("window.trapbatchRendered") == threshold
            assert page.locator("#thrv").text_content() == f"{threshold:g}".ljust(4, "0")
            totals = page.evaluate("Object.fromEntries([...document.querySelectorAll('h2 .total')].map("
                                   "e => [e.dataset.section, +e.textContent]))")
            want = _counts(entries, threshold)
            assert {k: totals[k] for k in want} == want
            files = page.evaluate("[...document.querySelectorAll('#detections figcaption')].map(c => "
                                  "c.firstChild.textContent)")
            assert sorted(files) == sorted(f for f, e in by_file.items() if e.get("failure") is None
                                           and _top(e) >= threshold)[:PAGE_SIZE]
            # the slider still moves in its steps, and back to the request's threshold's step
            step = page.evaluate("document.getElementById('thr').step")
            assert step == "0.001"
        finally:
            browser.close()


def _render_kinds(storage_connection: str, unique_name: str, tmp_path: Path, old: bool) -> Path:
    """A page of many animals and two people, drawn with a uniform sample too small to hold a person (as at 10M
    images); ``old``: its sample as code before the kind samples wrote it (no ``kind_samples``)."""
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "s",
                                  "TRAPBATCH_WEB_CONTAINER": unique_name + "w"})
    store = BlobStore(service_client(storage_connection))
    source = unique_name
    for name in (source, settings.container):
        store.ensure_container(name)
    entries = [{"file": f"cam0/a{i:03d}.jpg", "detections": [{"category": "1", "conf": 0.9,
                                                               "bbox": [0.25, 0.25, 0.5, 0.5]}]} for i in range(60)]
    entries += [{"file": f"cam1/p{i}.jpg", "detections": [{"category": "2", "conf": 0.7,
                                                           "bbox": [0.1, 0.1, 0.2, 0.4]}]} for i in range(2)]
    jpeg = _jpeg(320, 240)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda e: store.write_bytes(source, e["file"], jpeg), entries))
    task_id = "kindtask2"  # a seed whose uniform sample of 5 holds no person
    sampler = PreviewSampler(task_id, THRESHOLD, size=5)
    for e in entries:
        sampler.add(e)
    result = sampler.result()
    assert not [e for e in result["samples"]["detections"] if e["file"].startswith("cam1/")]  # the case at hand
    if old:
        del result["kind_samples"]
    sample = {**result, "images": len(entries), "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
              "info": {"detection_completion_time": "2026-12-01T00:00:00", "trapbatch": {"container": source}}}
    store.write_json(settings.container, layout.preview_sample_blob(task_id), sample)
    return _rendered(store, settings, task_id, "kinds check", tmp_path)


@pytest.mark.parametrize("old", [False, True], ids=["kind-samples", "sample-of-older-code"])
def test_a_kinds_chip_shows_its_own_sample_when_the_uniform_sample_has_none_of_it(
        storage_connection: str, unique_name: str, tmp_path: Path, old: bool) -> None:
    """'person' shows the people (with boxes drawn) although none is among the uniform sample's pictures; 'animal'
    shows animals only; a sample written before kind samples renders as before (no person picture, no error)."""
    _chromium()
    from playwright.sync_api import sync_playwright

    root = _render_kinds(storage_connection, unique_name, tmp_path, old)
    errors: list[str] = []
    drawn = ("() => [...document.querySelectorAll('.grid canvas')].every(c => c.id in window.trapbatchDrawn) && "
             "window.trapbatchRenders > {}")
    files = "[...document.querySelectorAll('#detections figcaption')].map(c => c.firstChild.textContent)"
    with _serve(root) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function(drawn.format(0), timeout=60_000)
            everything = page.evaluate(files)
            assert everything and not [f for f in everything if f.startswith("cam1/")]
            assert page.locator(".kind-total[data-category='2']").text_content() == " (2)"
            renders = page.evaluate("window.trapbatchRenders")
            page.locator(".chips button[data-category='2']").click()
            page.wait_for_function(drawn.format(renders), timeout=60_000)
            people = page.evaluate(files)
            assert people == ([] if old else ["cam1/p0.jpg", "cam1/p1.jpg"])
            boxes = page.evaluate("Object.values(window.trapbatchDrawn)")
            assert boxes == [[["2", 0.7]]] * len(people)
            renders = page.evaluate("window.trapbatchRenders")
            page.locator(".chips button[data-category='1']").click()
            page.wait_for_function(drawn.format(renders), timeout=60_000)
            animals = page.evaluate(files)
            assert animals and all(f.startswith("cam0/") for f in animals)
            assert set(everything) <= set(animals)  # the uniform sample's animals, and the kind's own
            assert errors == [], errors
        finally:
            browser.close()


def test_a_section_sorts_most_confident_first_and_back(served: tuple[str, list[dict[str, Any]], int]) -> None:
    """MegaDetector's html_sort_order='confidence', client-side: the toggle orders a section by its images' top
    confidence (ties by file), from the first page, and a second click gives the file order back."""
    _chromium()
    from playwright.sync_api import sync_playwright

    url, entries, _ = served
    by_file = {e["file"]: e for e in entries}
    files = "[...document.querySelectorAll('#detections figcaption')].map(c => c.firstChild.textContent)"
    drawn = "n => window.trapbatchRenders > n"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("() => window.trapbatchRenders > 0", timeout=60_000)
            before = page.evaluate(files)
            assert before == sorted(before)
            detections = sorted((f for f, e in by_file.items() if e.get("failure") is None
                                 and _top(e) >= THRESHOLD), key=lambda f: (-_top(by_file[f]), f))
            assert len(detections) > PAGE_SIZE  # the order must hold across pages, not within one
            button = page.locator("button.sort[data-section='detections']")
            for pressed, want in (("true", detections[:PAGE_SIZE]), ("false", before)):
                renders = page.evaluate("window.trapbatchRenders")
                button.click()
                page.wait_for_function(drawn, arg=renders, timeout=60_000)
                assert page.evaluate(files) == want
                assert button.get_attribute("aria-pressed") == pressed
            assert page.locator("button.sort[data-section='near_misses']").get_attribute("aria-pressed") == "false"
        finally:
            browser.close()

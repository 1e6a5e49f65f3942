"""The /ui page in a real headless Chromium (Debian's binary, driven by Playwright) against a real server.

With ``VITRINE_TEST_SCREENSHOTS=1`` each scenario saves a screenshot of the page under bench/results/ui/
(git-ignored): a full-page capture costs about 0.4 s of CPU, a quarter of these tests', so they are
taken when asked for.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.images import b64, encode_png, patterned_image
from tests.support.paths import REPO_ROOT

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)

SCREENSHOTS = REPO_ROOT / "bench" / "results" / "ui"
TAKE_SCREENSHOTS = os.environ.get("VITRINE_TEST_SCREENSHOTS", "") not in ("", "0")
TOKEN = "ui-t0ken"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    # No CDN: every request the page makes goes to the server under test (or is a blob:/data: URL).
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda r: None if urlsplit(r.url).hostname in (None, "127.0.0.1") else elsewhere.append(r.url),
    )
    yield page
    context.close()
    assert elsewhere == []


def screenshot(page, tmp_path: Path, name: str) -> Path | None:
    """The page's full-page screenshot as bench/results/ui/NAME.png, with VITRINE_TEST_SCREENSHOTS=1."""
    if not TAKE_SCREENSHOTS:
        return None
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / path.name)
    return path


def wait_until(page, expression: str, timeout_s: float = 30.0) -> None:
    """Poll a JavaScript expression from Python until it is truthy.

    Playwright's wait_for_function re-evaluates its predicate with eval() in later animation frames,
    which the page's CSP (no 'unsafe-eval') rightly refuses; page.evaluate runs through DevTools each
    time, so the pages are tested under the very policy they ship with.
    """
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout_s} s: {expression}")
        time.sleep(0.05)


def card_ids(page) -> list[str]:
    return page.locator("#results .card").evaluate_all("cards => cards.map(card => card.dataset.id)")


def test_typing_a_query_shows_result_cards_with_images_and_scores(catalog_copy, start_server, page, tmp_path):
    server = start_server()
    page.goto(f"{server.base_url}/ui/")
    page.locator("main").wait_for()
    page.keyboard.press("/")  # the keyboard shortcut to the search box
    page.keyboard.type("beige matte ceramic floor tile")
    page.keyboard.press("Enter")
    page.locator("#results .card").first.wait_for()
    assert len(card_ids(page)) == 24
    # Relevance in words for people, the raw scores on hover.
    assert "best match" in page.locator("#results .card .score").first.inner_text()
    assert page.locator("#results .card .score").first.get_attribute("title").startswith("score ")
    wait_until(
        page, "[...document.querySelectorAll('#results img')].slice(0, 8).every(i => i.naturalWidth > 0)"
    )
    screenshot(page, tmp_path, "01-text-search")


def test_uploading_a_product_image_finds_that_product_first(catalog_copy, start_server, page, tmp_path):
    server = start_server()
    row = catalog_copy.row("sku-00017")
    page.goto(f"{server.base_url}/ui/")
    page.locator("main").wait_for()
    page.set_input_files("#image-file", str(catalog_copy.manifest.parent / row["image"]))
    wait_until(page, "document.querySelector('#results .card')?.dataset.id === 'sku-00017'")
    assert page.locator("#crop-stage img").is_visible()
    screenshot(page, tmp_path, "02-image-search")
    # A crop box drawn on the picture searches with that part of it.
    box = page.locator("#query-image").bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    wait_until(page, "document.querySelector('#summary').textContent === 'Image (cropped)'")
    assert page.locator("#crop-box").is_visible()
    page.locator("#results .card").first.wait_for()
    screenshot(page, tmp_path, "02b-image-search-cropped")


def test_more_like_this_shows_neighbours_without_the_product_itself(
    catalog_copy, start_server, page, tmp_path
):
    server = start_server()
    page.goto(f"{server.base_url}/ui/")
    page.get_by_placeholder("Describe a product").fill("tile")
    page.keyboard.press("Enter")
    first = page.locator("#results .card").first
    first.wait_for()
    product_id = first.get_attribute("data-id")
    first.get_by_role("button", name="More like this").click()
    wait_until(page, "document.querySelector('#summary').textContent.startsWith('Products that look like')")
    assert page.locator("#q").input_value() == ""  # the box no longer shows a query that is not searched
    page.locator("#results .card").first.wait_for()
    ids = card_ids(page)
    assert ids and product_id not in ids
    screenshot(page, tmp_path, "03-more-like-this")


def test_product_view_shows_its_images_and_attributes(catalog_copy, start_server, page, tmp_path):
    server = start_server()
    page.goto(f"{server.base_url}/ui/")
    page.get_by_placeholder("Describe a product").fill("tile")
    page.keyboard.press("Enter")
    page.locator("#results .card .title").first.click()
    dialog = page.locator("#product")
    dialog.wait_for()
    wait_until(page, "[...document.querySelectorAll('#product-images img')].every(i => i.naturalWidth > 0)")
    assert dialog.locator("#product-images img").count() >= 1
    assert dialog.locator("#product-attributes dt").count() >= 1
    screenshot(page, tmp_path, "04-product-view")
    page.keyboard.press("Escape")
    assert not dialog.is_visible()


def test_clicking_a_facet_value_filters_the_results_by_it(catalog_copy, start_server, page, tmp_path):
    server = start_server()
    searches: list[dict] = []
    page.on(
        "request", lambda r: searches.append(json.loads(r.post_data)) if r.url.endswith("/search") else None
    )
    page.goto(f"{server.base_url}/ui/")
    page.get_by_placeholder("Describe a product").fill("tile")
    page.keyboard.press("Enter")
    facets = page.locator("#facets")
    facets.get_by_role("heading", name="color").wait_for()
    # The first search already asks for the category and the attribute fields the catalog has.
    assert {"category", "color", "pattern", "finish"} <= set(searches[0]["facets"])
    colors = facets.locator("div", has=page.get_by_role("heading", name="color")).get_by_role("button")
    label = colors.first.inner_text()  # "<value> (<count>)"
    value, count = label.rsplit(" (", 1)
    with page.expect_response(lambda r: r.url.endswith("/search")) as answer:
        colors.first.click()
    assert searches[-1]["filters"] == {"color": value}
    results = answer.value.json()["results"]
    assert results and all(hit["attributes"]["color"] == value for hit in results)
    assert len(results) == min(int(count.rstrip(")")), 24)
    page.get_by_role("button", name=f"Remove filter color {value}").wait_for()
    wait_until(page, f"[...document.querySelectorAll('#results .card')].length === {len(results)}")
    assert card_ids(page) == [hit["id"] for hit in results]
    path = screenshot(page, tmp_path, "10-facets")
    assert path is None or path.stat().st_size > 0


def test_a_product_with_three_images_shows_them_all_and_its_card_the_matched_one(
    catalog_copy, start_server, page, tmp_path
):
    server = start_server()
    pictures = [encode_png(patterned_image(seed)) for seed in (101, 102, 103)]
    put = server.client.put(
        "/products/sku-three",
        json={
            "title": "Three-view teal tile",
            "category": "ceramic tile",
            "color": "teal",
            "images": [b64(picture) for picture in pictures],
        },
    )
    assert put.status_code in (200, 201), put.text
    query = tmp_path / "third.png"
    query.write_bytes(pictures[2])
    page.goto(f"{server.base_url}/ui/")
    page.locator("main").wait_for()
    page.set_input_files("#image-file", str(query))
    wait_until(page, "document.querySelector('#results .card')?.dataset.id === 'sku-three'")
    first = page.locator("#results .card").first
    # The card shows the image that matched (the third), not the product's first image.
    assert first.locator("img").get_attribute("data-position") == "2"
    assert first.locator(".matched").inner_text() == "matched image 3 of 3"
    wait_until(page, "document.querySelector('#results .card img').naturalWidth > 0")
    assert first.locator("img").get_attribute("src").endswith("/products/sku-three/images/2")
    first.locator(".title").click()
    gallery = page.locator("#product-images img")
    wait_until(
        page,
        "(() => { const imgs = [...document.querySelectorAll('#product-images img')];"
        " return imgs.length === 3 && imgs.every(i => i.naturalWidth > 0); })()",
    )
    sources = gallery.evaluate_all("imgs => imgs.map(i => i.src)")
    assert [src.rsplit("/", 1)[1] for src in sources] == ["0", "1", "2"]
    screenshot(page, tmp_path, "04b-product-three-images")


def test_zero_shot_playground_shows_scores_as_bars(catalog_copy, start_server, page, tmp_path):
    server = start_server()
    page.goto(f"{server.base_url}/ui/")
    page.get_by_role("button", name="Zero-shot").click()
    page.set_input_files(
        "#zs-file", str(catalog_copy.manifest.parent / catalog_copy.row("sku-00003")["image"])
    )
    page.get_by_role("button", name="Classify").click()
    page.locator("#zs-bars li").first.wait_for()
    assert page.locator("#zs-bars li").count() == 4
    values = page.locator("#zs-bars .track").evaluate_all(
        "t => t.map(e => Number(e.getAttribute('aria-valuenow')))"
    )
    assert abs(sum(values) - 1) < 1e-6 and values == sorted(values, reverse=True)
    screenshot(page, tmp_path, "05-zero-shot")


def test_with_tokens_on_the_page_shows_nothing_until_a_token_is_entered(
    catalog_copy, start_server, page, tmp_path
):
    server = start_server(api_tokens=[TOKEN])
    page.goto(f"{server.base_url}/ui/")
    token_field = page.get_by_label("API token")
    token_field.wait_for()
    assert not page.locator("main").is_visible()
    assert page.locator("#results .card").count() == 0
    screenshot(page, tmp_path, "06-token-required")
    token_field.fill("wrong")
    page.keyboard.press("Enter")
    wait_until(page, "document.querySelector('#status').textContent.includes('refused')")
    assert not page.locator("main").is_visible()
    token_field.fill(TOKEN)
    page.keyboard.press("Enter")
    page.locator("main").wait_for()
    page.get_by_placeholder("Describe a product").fill("tile")
    page.keyboard.press("Enter")
    page.locator("#results .card").first.wait_for()
    # Every image came through fetch() with the token (a blob: URL), none through a public URL.
    wait_until(
        page,
        "[...document.querySelectorAll('#results img')].every(i => i.src.startsWith('blob:') && i.naturalWidth > 0)",
    )
    screenshot(page, tmp_path, "07-token-entered")


def test_the_page_is_readable_on_a_phone(catalog_copy, start_server, browser, tmp_path):
    server = start_server()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(f"{server.base_url}/ui/")
        page.get_by_placeholder("Describe a product").fill("wood")
        page.keyboard.press("Enter")
        page.locator("#results .card").first.wait_for()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # no sideways scrolling
        screenshot(page, tmp_path, "08-phone")
    finally:
        context.close()


def test_swagger_ui_renders_offline_with_an_authorize_button(start_server, page, tmp_path):
    server = start_server(api_tokens=[TOKEN])
    page.goto(f"{server.base_url}/docs")
    page.get_by_role("button", name="Authorize").first.wait_for()
    assert page.locator(".opblock").count() >= 5
    screenshot(page, tmp_path, "09-swagger")


CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


def test_the_pages_run_under_their_content_security_policy_without_a_violation(
    catalog_copy, start_server, page
):
    server = start_server(api_tokens=[TOKEN])
    page.add_init_script(CSP_VIOLATIONS)
    for path in ("/ui/", "/docs"):
        response = page.goto(f"{server.base_url}{path}")
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "frame-ancestors 'none'" in policy and response.headers["x-content-type-options"] == "nosniff"
    # Swagger UI renders and authorizes from its script file alone (no inline start-up script).
    page.get_by_role("button", name="Authorize").first.click()
    page.locator(".auth-container input").first.fill(TOKEN)
    page.locator(".auth-btn-wrapper button.authorize").first.click()
    page.locator(".auth-btn-wrapper button.btn-done").first.click()
    assert page.locator(".opblock").count() >= 5
    assert page.evaluate("window.__cspViolations") == []
    # The /ui page works under it: the token form, a search, results with pictures.
    page.goto(f"{server.base_url}/ui/")
    page.locator("#token").fill(TOKEN)
    page.locator("#token-form button").click()
    page.get_by_placeholder("Describe a product").fill("tile")
    page.keyboard.press("Enter")
    page.locator("#results .card img").first.wait_for()
    assert page.evaluate("window.__cspViolations") == []


def test_swagger_does_not_keep_the_token_in_local_storage(start_server, page):
    server = start_server(api_tokens=[TOKEN])
    page.goto(f"{server.base_url}/docs")
    page.get_by_role("button", name="Authorize").first.click()
    page.locator(".auth-container input").first.fill(TOKEN)
    page.locator(".auth-btn-wrapper button.authorize").first.click()
    stored = page.evaluate("JSON.stringify(Object.assign({}, window.localStorage))")
    assert TOKEN not in stored  # persistAuthorization would write it there, readable by any script, forever


def test_hide_duplicates_shows_one_product_per_duplicate_group(catalog_copy, start_server, page, tmp_path):
    server = start_server()
    row = catalog_copy.row("sku-00017")
    relisted = server.client.put(
        "/products/sku-00017-relisted",
        json={
            "title": row["title"],
            "category": row["category"],
            "image": b64(catalog_copy.image_bytes("sku-00017")),
        },
    )
    assert relisted.status_code == 201, relisted.text
    collapsed = server.client.post("/search", json={"text": row["title"], "k": 24, "collapse": "duplicates"})
    expected = [result["id"] for result in collapsed.json()["results"]]
    assert len([i for i in expected if i.startswith("sku-00017")]) <= 1  # a byte copy: one group
    page.goto(f"{server.base_url}/ui/")
    page.get_by_placeholder("Describe a product").fill(row["title"])
    page.keyboard.press("Enter")
    wait_until(page, "document.querySelectorAll('#results .card').length > 0")
    assert {"sku-00017", "sku-00017-relisted"} <= set(card_ids(page))
    page.locator("#hide-duplicates").check()  # the current search runs again, collapsed
    wait_until(
        page,
        f"JSON.stringify([...document.querySelectorAll('#results .card')].map(c => c.dataset.id)) === {json.dumps(json.dumps(expected, separators=(',', ':')))}",
    )
    screenshot(page, tmp_path, "08-hide-duplicates")

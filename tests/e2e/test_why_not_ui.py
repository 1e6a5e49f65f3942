"""The product view's "why not" box (api/static/ui/whynot.js) in a real headless Chromium: it asks
POST /search/explain about the opened product with the page's last search."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_ui import CHROMIUM, browser, page, screenshot, wait_until  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)


def test_the_why_not_box_explains_where_the_opened_product_went(catalog_copy, start_server, page, tmp_path):  # noqa: F811
    server = start_server()
    asked: list[dict] = []
    page.on(
        "request",
        lambda r: asked.append(json.loads(r.post_data)) if r.url.endswith("/search/explain") else None,
    )
    page.goto(f"{server.base_url}/ui/")
    page.get_by_placeholder("Describe a product").fill("tile")
    page.keyboard.press("Enter")
    first = page.locator("#results .card").first
    first.wait_for()
    product_id = first.get_attribute("data-id")
    first.locator(".title").click()
    box = page.locator("#why-not")
    box.get_by_role("button", name="Why is this (not) in my results?").click()
    wait_until(page, "document.getElementById('why-not').textContent.includes('It is in the results.')")
    assert asked[-1]["product_id"] == product_id and asked[-1]["query"]["text"] == "tile"
    assert "facets" not in asked[-1]["query"]
    assert "Rank 1 in the hybrid ranking." in box.inner_text()
    screenshot(page, tmp_path, "20-why-not")
    # More like this: the product is the query's own example, never its own result.
    page.locator("#product-similar").click()
    page.locator("#results .card").first.wait_for()
    page.locator("#results .card .title").first.click()
    page.locator("#product-title").wait_for()
    page.evaluate(
        "id => document.dispatchEvent(new CustomEvent('vitrine:product', "
        "{detail: {id, query: {product_id: id, k: 24}}}))",
        product_id,
    )
    box.get_by_role("button", name="Why is this (not) in my results?").click()
    wait_until(page, "document.getElementById('why-not').textContent.includes('example of the query')")

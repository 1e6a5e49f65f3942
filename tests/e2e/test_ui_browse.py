"""The /ui page as a shopper browses it: the search in the URL (Back, Forward, shared links), paging,
sort by price, the whole card opening the product, the landing page and the phone layout.

Same set-up as test_ui.py (Debian's chromium through Playwright, 40 generated products); screenshots go
to bench/results/ui/ too.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from tests.e2e import test_ui as ui
from tests.e2e.test_ui import card_ids, screenshot, wait_until

# test_ui.py's fixtures: one Chromium per module, a fresh page per test that allows no request elsewhere.
browser = ui.browser
page = ui.page
pytestmark = ui.pytestmark

PAGE_SIZE = 24


def search(page, text: str) -> None:
    page.get_by_placeholder("Describe a product").fill(text)
    page.keyboard.press("Enter")
    page.locator("#results .card").first.wait_for()


def query_of(page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def test_the_search_lives_in_the_url_and_back_and_forward_step_through_it(
    catalog_copy, start_server, page, tmp_path
):
    server = start_server()
    page.goto(f"{server.base_url}/ui/")
    search(page, "tile")
    assert query_of(page)["q"] == ["tile"]
    first = card_ids(page)
    liked = first[0]
    page.locator("#results .card").first.get_by_role("button", name="More like this").click()
    wait_until(page, f"location.search.includes('like={liked}')")
    wait_until(page, "document.querySelector('#summary').textContent.startsWith('Products that look like')")
    assert page.locator("#q").input_value() == ""
    page.go_back()
    wait_until(page, "new URLSearchParams(location.search).get('q') === 'tile'")
    wait_until(page, "document.querySelector('#summary').textContent === '“tile”'")
    assert page.locator("#q").input_value() == "tile"
    wait_until(page, f"document.querySelectorAll('#results .card').length === {len(first)}")
    assert card_ids(page) == first
    page.go_forward()
    wait_until(page, "document.querySelector('#summary').textContent.startsWith('Products that look like')")
    # A shared link opens on the same search.
    shared = page.context.new_page()
    shared.goto(f"{server.base_url}/ui/?q=tile&filters=" + json.dumps({"category": "ceramic tile"}))
    wait_until(shared, "document.querySelector('#results .card') !== null")
    assert shared.locator("#q").input_value() == "tile"
    shared.get_by_role("button", name="Remove filter category ceramic tile").wait_for()
    screenshot(shared, tmp_path, "11-shared-link")
    shared.close()


def test_load_more_pages_through_every_result(catalog_copy, start_server, page, tmp_path):
    server = start_server()
    page.goto(f"{server.base_url}/ui/")
    search(page, "tile")
    assert len(card_ids(page)) == PAGE_SIZE
    more = page.get_by_role("button", name="Load more")
    more.click()
    wait_until(page, "document.querySelectorAll('#results .card').length === 40")
    ids = card_ids(page)
    assert len(set(ids)) == 40  # the second page follows the first, nothing twice
    assert query_of(page)["page"] == ["2"]
    assert not more.is_visible()
    screenshot(page, tmp_path, "12-load-more")
    page.reload()  # the URL's page 2 shows both pages again
    wait_until(page, "document.querySelectorAll('#results .card').length === 40")


def test_sort_by_price_orders_the_results_and_asks_the_api_to(catalog_copy, start_server, page, tmp_path):
    server = start_server()
    bodies: list[dict] = []
    page.on(
        "request", lambda r: bodies.append(json.loads(r.post_data)) if r.url.endswith("/search") else None
    )
    page.goto(f"{server.base_url}/ui/")
    search(page, "tile")
    with page.expect_response(lambda r: r.url.endswith("/search")) as answer:
        page.select_option("#sort", "price")
    assert bodies[-1]["sort"] == [{"field": "price", "order": "asc"}]
    prices = [float(hit["attributes"]["price"]) for hit in answer.value.json()["results"]]
    assert prices == sorted(prices) and len(prices) == PAGE_SIZE
    wait_until(page, f"document.querySelector('#results .card .price').textContent === '{prices[0]:.2f}'")
    assert query_of(page)["sort"] == ["price"]
    with page.expect_response(lambda r: r.url.endswith("/search")) as answer:
        page.select_option("#sort", "-price")
    prices = [float(hit["attributes"]["price"]) for hit in answer.value.json()["results"]]
    assert prices == sorted(prices, reverse=True)
    screenshot(page, tmp_path, "13-sorted-by-price")


def test_clicking_anywhere_on_a_card_opens_the_product(catalog_copy, start_server, page, tmp_path):
    server = start_server()
    page.goto(f"{server.base_url}/ui/")
    search(page, "tile")
    card = page.locator("#results .card").nth(2)
    product_id = card.get_attribute("data-id")
    card.locator("img").click()
    dialog = page.locator("#product")
    dialog.wait_for()
    assert product_id in page.locator("#product-meta").inner_text()
    page.keyboard.press("Escape")
    card.locator(".score").click()  # the text, too
    dialog.wait_for()


def test_the_landing_page_shows_the_catalog(catalog_copy, start_server, page, tmp_path):
    server = start_server()
    page.goto(f"{server.base_url}/ui/")
    landing = page.locator("#landing")
    landing.wait_for()
    categories = landing.locator("#landing-categories button").all_inner_texts()
    assert categories and sum(int(text.rsplit("(", 1)[1].rstrip(")")) for text in categories) == 40
    assert landing.locator("#landing-newest .card").count() == 8
    assert "40 products" in landing.inner_text()
    screenshot(page, tmp_path, "14-landing")
    name = categories[0].rsplit(" (", 1)[0]
    landing.locator("#landing-categories button").first.click()
    page.locator("#results .card").first.wait_for()
    assert not landing.is_visible()
    assert query_of(page)["q"] == [name]


def test_on_a_phone_results_come_first_and_filters_wait_behind_a_button(
    catalog_copy, start_server, browser, tmp_path
):
    server = start_server()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone = context.new_page()
    try:
        phone.goto(f"{server.base_url}/ui/")
        search(phone, "tile")
        first_card = phone.locator("#results .card").first.bounding_box()
        assert first_card["y"] < 844  # the first result is on the first screen
        facets = phone.locator("#facets")
        assert not facets.is_visible()
        screenshot(phone, tmp_path, "15-phone-results-first")
        phone.get_by_role("button", name="Filters").click()
        assert facets.is_visible()
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(phone, tmp_path, "16-phone-filters-open")
    finally:
        context.close()

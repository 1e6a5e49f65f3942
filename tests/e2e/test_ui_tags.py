"""The page's tags (api/static/ui/tags.js) in headless Chromium against a real server: the taxonomy's
attributes as facets that filter the results, and the Audit view's table of contradictions."""

from __future__ import annotations

import json
import time

from tests.e2e.test_ui import browser, page, screenshot, wait_until  # noqa: F401 (fixtures)

TAXONOMY = {
    "attributes": {
        "color": {"values": ["red", "blue", "green", "yellow"], "min_score": 0.0},
        "category": {"values": ["ceramic tile", "natural stone", "wood laminate"], "min_score": 0.0},
    }
}


def tagged_server(start_server):
    server = start_server()
    response = server.client.put("/taxonomy", json=TAXONOMY)
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 60
    while server.client.get("/taxonomy").json()["retag"]["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return server


def test_tag_facets_filter_the_results(catalog_copy, start_server, page, tmp_path):  # noqa: F811
    server = tagged_server(start_server)
    searches: list[dict] = []
    page.on(
        "request", lambda r: searches.append(json.loads(r.post_data)) if r.url.endswith("/search") else None
    )
    page.goto(f"{server.base_url}/ui/")
    page.get_by_placeholder("Describe a product").fill("tile")
    page.keyboard.press("Enter")
    facets = page.locator("#facets")
    facets.get_by_role("heading", name="tags.color").wait_for()
    assert {"tags.color", "tags.category"} <= set(searches[0]["facets"])
    values = facets.locator("div", has=page.get_by_role("heading", name="tags.color")).get_by_role("button")
    value = values.first.inner_text().rsplit(" (", 1)[0]
    with page.expect_response(lambda r: r.url.endswith("/search")) as answer:
        values.first.click()
    assert searches[-1]["filters"] == {"tags.color": value}
    results = answer.value.json()["results"]
    assert results and all(hit["tags"]["color"]["value"] == value for hit in results)
    screenshot(page, tmp_path, "20-tag-facets")


def test_the_audit_view_lists_the_contradictions(catalog_copy, start_server, page, tmp_path):  # noqa: F811
    server = tagged_server(start_server)
    expected = server.client.get(
        "/audit", params={"attribute": "category", "min_score": 0, "limit": 50}
    ).json()
    page.goto(f"{server.base_url}/ui/")
    page.get_by_role("button", name="Audit").click()
    page.locator("#audit-attribute").select_option("category")
    page.locator("#audit-min").fill("0")
    page.get_by_role("button", name="Audit", exact=True).last.click()
    wait_until(page, f"document.querySelectorAll('#audit-rows tr').length === {expected['count']}")
    first = page.locator("#audit-rows tr").first.locator("td")
    row = expected["results"][0]
    assert [first.nth(i).inner_text() for i in range(3)] == [row["id"], row["given"], row["predicted"]]
    assert page.locator("#view-search").is_hidden()
    screenshot(page, tmp_path, "21-audit")


def test_the_chosen_audit_attribute_survives_the_view_reloading_its_attributes(
    catalog_copy, start_server, page  # noqa: F811
):
    # Opening the view fetches the taxonomy and refills the attribute list; an answer arriving after the
    # user's choice used to reset it to the first attribute (and the audit then ran on the wrong one).
    server = tagged_server(start_server)
    page.goto(f"{server.base_url}/ui/")
    with page.expect_response(lambda r: r.url.endswith("/taxonomy")):
        page.get_by_role("button", name="Audit").click()
    page.locator("#audit-attribute").select_option("category")
    page.get_by_role("button", name="Search").first.click()
    with page.expect_response(lambda r: r.url.endswith("/taxonomy")):
        page.get_by_role("button", name="Audit").first.click()
    page.wait_for_timeout(100)  # the answer's handler has run
    assert page.locator("#audit-attribute").input_value() == "category"

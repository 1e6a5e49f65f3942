"""/docs works offline and with tokens on; the OpenAPI document has an Authorize scheme and only the
statuses the API really sends."""

from __future__ import annotations

import re


def test_docs_page_loads_its_assets_from_this_server_only(shared_server):
    page = shared_server.client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert urls and all(url.startswith("/") for url in urls), urls
    for url in urls:
        assert shared_server.client.get(url).status_code == 200, url


def test_docs_and_openapi_are_public_when_tokens_are_on_but_the_api_is_not(start_shared_server):
    server = start_shared_server(api_tokens=["s3cret"])
    for path in ("/docs", "/openapi.json", "/static/swagger/swagger-ui-bundle.js"):
        assert server.client.get(path).status_code == 200, path
    assert server.client.post("/search", json={"text": "x"}).status_code == 401


def test_openapi_declares_bearer_auth_and_public_probes(shared_server):
    spec = shared_server.client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert spec["security"] == [{"bearer": []}]
    assert spec["paths"]["/health"]["get"]["security"] == []


def test_openapi_documents_no_422_and_the_real_error_statuses(shared_server):
    spec = shared_server.client.get("/openapi.json").json()
    assert '"422"' not in shared_server.client.get("/openapi.json").text
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    search = spec["paths"]["/search"]["post"]["responses"]
    assert {"400", "401", "404", "413", "429", "503"} <= set(search)
    similar = spec["paths"]["/products/{product_id}/similar"]["get"]["responses"]
    assert "422" not in similar and "404" in similar


def test_a_bad_query_parameter_is_a_400_as_documented(shared_server):
    response = shared_server.client.get("/products/x/similar", params={"k": "many"})
    assert response.status_code == 400
    assert list(response.json()) == ["error"]

"""GET /metrics: Prometheus text with request counts by route template, latency, index and model."""

from __future__ import annotations

import re


def test_metrics_count_requests_by_route_template_and_status(server):
    server.client.post("/", json={"inputs": ["a tile"], "parameters": {"mode": "text_embedding"}})
    server.client.get("/products/no-such-product")
    server.client.get("/products/another-missing-one")
    text = server.client.get("/metrics").text
    assert 'vitrine_requests_total{route="/",method="POST",status="200"} 1' in text
    # Product ids are not labels (they would make the series unbounded): both 404s share one series.
    assert 'vitrine_requests_total{route="/products/{product_id}",method="GET",status="404"} 2' in text
    assert re.search(r'vitrine_request_seconds_count\{route="/"\} 1\b', text)
    assert 'vitrine_request_seconds_bucket{route="/",le="+Inf"} 1' in text


def test_metrics_report_readiness_index_and_model(server, tiny_model_dir):
    text = server.client.get("/metrics").text
    assert "vitrine_ready 1.0" in text
    assert "vitrine_index_vectors 0.0" in text
    assert (
        f'model="{tiny_model_dir}"' in text
        and 'random_weights="true"' in text
        and 'index_type="flat"' in text
        and 'index_device="cpu"' in text
    )


def test_metrics_need_the_token_like_every_other_route(start_server):
    server = start_server(api_tokens=["s3cret"])
    assert server.client.get("/metrics").status_code == 401
    response = server.client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200
    # Refused before routing, so without a route template; raw paths never become labels.
    assert 'route="unmatched",method="GET",status="401"' in response.text

"""Bearer tokens: with tokens configured every route but the probes needs one; without, the API is open."""

from __future__ import annotations

import logging

import pytest

from api.auth import token_matches
from tests.support.http import assert_error

PAYLOAD = {"inputs": ["ceramic tile"], "parameters": {"mode": "text_embedding"}}


@pytest.fixture(scope="module")
def locked(start_shared_server):
    return start_shared_server(api_tokens=["hf_first", "hf_second"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_authorization_header_is_401(locked):
    response = locked.client.post("/", json=PAYLOAD)
    assert "Authorization" in assert_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


def test_wrong_token_is_401(locked):
    assert_error(locked.client.post("/", json=PAYLOAD, headers=bearer("hf_wrong")), 401)


@pytest.mark.parametrize(
    "header",
    ["hf_first", "Basic hf_first", "Bearer", "Bearer hf_first_and_more", "Bearer hf_firs"],
)
def test_malformed_or_partial_credentials_are_401(locked, header):
    assert_error(locked.client.post("/", json=PAYLOAD, headers={"Authorization": header}), 401)


@pytest.mark.parametrize("token", ["hf_first", "hf_second"])
def test_any_configured_token_is_accepted(locked, token):
    response = locked.client.post("/", json=PAYLOAD, headers=bearer(token))
    assert response.status_code == 200
    assert len(response.json()) == 1


def test_bearer_scheme_is_case_insensitive(locked):
    response = locked.client.post("/", json=PAYLOAD, headers={"Authorization": "bearer hf_first"})
    assert response.status_code == 200


def test_info_needs_a_token(locked):
    assert_error(locked.client.get("/info"), 401)
    assert locked.client.get("/info", headers=bearer("hf_first")).status_code == 200


def test_unknown_route_needs_a_token_before_it_says_404(locked):
    assert_error(locked.client.get("/no-such-route"), 401)


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_probes_are_open_without_a_token(locked, path):
    assert locked.client.get(path).status_code == 200


def test_error_inside_an_authorised_request_keeps_its_own_status(locked):
    response = locked.client.post("/", json={"inputs": None}, headers=bearer("hf_first"))
    assert assert_error(response, 400) == "Unsupported image input type: <class 'NoneType'>"


def test_without_tokens_the_api_is_open(shared_server):
    assert shared_server.client.post("/", json=PAYLOAD).status_code == 200
    assert shared_server.client.get("/info").status_code == 200


def test_without_tokens_any_authorization_header_is_ignored(shared_server):
    assert shared_server.client.post("/", json=PAYLOAD, headers=bearer("anything")).status_code == 200


def test_open_api_says_so_in_the_startup_log(start_server, caplog):
    with caplog.at_level(logging.WARNING, logger="api.app"):
        start_server()
    assert any("OPEN" in record.getMessage() for record in caplog.records)


def test_locked_api_logs_the_token_count_not_the_tokens(start_server, caplog):
    with caplog.at_level(logging.INFO, logger="api.app"):
        start_server(api_tokens=["hf_secret_value"])
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "1 token(s)" in messages
    assert "hf_secret_value" not in messages


def test_token_matches_only_whole_configured_tokens():
    tokens = [b"alpha", b"beta"]
    assert token_matches("alpha", tokens)
    assert token_matches("beta", tokens)
    assert not token_matches("alph", tokens)
    assert not token_matches("alphabeta", tokens)
    assert not token_matches("", tokens)
    assert not token_matches("é", tokens)


# Found by mutation testing (make mutants) ---------------------------------------------------------------


def test_the_two_refusals_say_exactly_what_is_wrong(locked):
    missing = assert_error(locked.client.post("/", json=PAYLOAD), 401)
    assert missing == "missing Authorization header; send 'Authorization: Bearer <token>'"
    wrong = assert_error(locked.client.post("/", json=PAYLOAD, headers=bearer("hf_wrong")), 401)
    assert wrong == "invalid token"


def test_spaces_between_the_scheme_and_the_token_are_allowed(locked):
    response = locked.client.post("/", json=PAYLOAD, headers={"Authorization": "Bearer   hf_first "})
    assert response.status_code == 200


def test_a_401_on_the_openai_routes_has_openais_error_shape(locked):
    response = locked.client.post("/v1/embeddings", json={"input": "tile", "model": "m"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "error": {
            "message": "missing Authorization header; send 'Authorization: Bearer <token>'",
            "type": "authentication_error",
            "param": None,
            "code": None,
        }
    }

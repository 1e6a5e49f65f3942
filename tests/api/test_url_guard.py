"""Image URLs are fetched on the caller's behalf, so the fetch is guarded (SSRF): addresses, redirects,
schemes, sizes and time. Every test talks to a real local HTTP server through a real uvicorn server."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from search.images.addresses import address_kind
from search.images.fetch import AddressPolicy, AddressRefused
from tests.support.http import assert_error
from tests.support.images import encode_png, patterned_image

PNG = encode_png(patterned_image(11))


def embed(server, url):
    return server.client.post("/", json={"inputs": url, "parameters": {"mode": "image_embedding"}})


def assert_embedded(response) -> None:
    assert response.status_code == 200, response.text
    assert len(response.json()) == 1


# Which addresses --------------------------------------------------------------------------------------------


def test_loopback_url_refused_when_not_allowed(start_shared_server, image_server):
    server = start_shared_server(url_allow_hosts=[])
    url = image_server.add("/guard/refused.png", PNG)
    message = assert_error(embed(server, url), 400)
    assert "URL refused" in message and "VITRINE_URL_ALLOW_HOSTS" in message
    assert image_server.hits.get("/guard/refused.png", 0) == 0  # refused before connecting


def test_loopback_url_fetched_when_allowed(shared_server, image_server):
    url = image_server.add("/guard/allowed.png", PNG)
    assert_embedded(embed(shared_server, url))
    assert image_server.hits["/guard/allowed.png"] >= 1


def test_hostname_entry_allows_that_name(start_shared_server, image_server):
    server = start_shared_server(url_allow_hosts=["localhost"])
    image_server.add("/guard/by-name.png", PNG)
    assert_embedded(embed(server, image_server.url("/guard/by-name.png", host="localhost")))


def test_hostname_entry_does_not_allow_the_address_itself(start_shared_server, image_server):
    server = start_shared_server(url_allow_hosts=["localhost"])
    url = image_server.add("/guard/by-name-ip.png", PNG)
    assert "URL refused" in assert_error(embed(server, url), 400)


def test_cidr_entry_allows_addresses_in_it(start_shared_server, image_server):
    server = start_shared_server(url_allow_hosts=["127.0.0.0/8"])
    image_server.add("/guard/cidr.png", PNG)
    assert_embedded(embed(server, image_server.url("/guard/cidr.png")))
    assert_embedded(embed(server, image_server.url("/guard/cidr.png", host="localhost")))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.0.0.1/a.png",
        "http://192.168.1.1/a.png",
        "http://0.0.0.0/a.png",
        "http://[::1]/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://2130706433/a.png",  # 127.0.0.1 as one decimal number
        "http://127.1/a.png",
    ],
)
def test_non_public_addresses_refused(start_shared_server, url):
    server = start_shared_server(url_allow_hosts=[])
    assert "URL refused" in assert_error(embed(server, url), 400)


# Redirects --------------------------------------------------------------------------------------------------


def test_redirect_between_allowed_addresses_is_followed(shared_server, image_server):
    image_server.add("/guard/target.png", PNG)
    assert_embedded(embed(shared_server, image_server.redirect("/guard/hop", "/guard/target.png")))


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_redirect_status_is_followed(shared_server, image_server, status):
    image_server.add("/guard/status-target.png", PNG)
    url = image_server.redirect(
        f"/guard/status-{status}", image_server.url("/guard/status-target.png"), status
    )
    assert_embedded(embed(shared_server, url))


def test_redirect_from_allowed_host_to_private_address_refused(start_shared_server, image_server):
    server = start_shared_server(url_allow_hosts=["localhost"])
    image_server.add("/guard/private.png", PNG)
    image_server.redirect("/guard/to-private", image_server.url("/guard/private.png"))  # 127.0.0.1
    message = assert_error(embed(server, image_server.url("/guard/to-private", host="localhost")), 400)
    assert "URL refused" in message
    assert image_server.hits.get("/guard/private.png", 0) == 0


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/a.png", "gopher://127.0.0.1:70/"])
def test_redirect_to_a_non_http_scheme_refused(shared_server, image_server, target):
    url = image_server.redirect(f"/guard/to-{target.split(':')[0]}", target)
    assert "only http and https" in assert_error(embed(shared_server, url), 400)


def test_more_redirects_than_the_limit_refused(start_shared_server, image_server):
    server = start_shared_server(fetch_max_redirects=2)
    image_server.add("/guard/end.png", PNG)
    image_server.redirect("/guard/r3", "/guard/end.png")
    image_server.redirect("/guard/r2", "/guard/r3")
    first = image_server.redirect("/guard/r1", "/guard/r2")
    assert "more than 2 redirects" in assert_error(embed(server, first), 400)
    assert_embedded(embed(server, image_server.url("/guard/r2")))  # two redirects are within the limit


def test_redirect_loop_refused(shared_server, image_server):
    url = image_server.redirect("/guard/loop", "/guard/loop")
    assert "redirects" in assert_error(embed(shared_server, url), 400)


def test_malformed_redirect_location_is_400(shared_server, image_server):
    url = image_server.redirect("/guard/bad-location", "http://[::1")
    assert_error(embed(shared_server, url), 400)


# Origin answers -----------------------------------------------------------------------------------------------


def test_404_from_origin_is_400(shared_server, image_server):
    assert "HTTP 404" in assert_error(embed(shared_server, image_server.url("/guard/missing.png")), 400)


def test_500_from_origin_is_400(shared_server, image_server):
    url = image_server.add("/guard/broken.png", b"oops", status=500)
    assert "HTTP 500" in assert_error(embed(shared_server, url), 400)


def test_nothing_listening_is_400(shared_server):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once the socket closes
    assert "failed" in assert_error(embed(shared_server, f"http://127.0.0.1:{port}/a.png"), 400)


def test_https_to_a_plain_http_server_is_400(shared_server, image_server):
    image_server.add("/guard/plain.png", PNG)
    url = image_server.url("/guard/plain.png").replace("http://", "https://")
    assert_error(embed(shared_server, url), 400)


def test_download_over_the_byte_limit_is_413(start_shared_server, image_server):
    server = start_shared_server(max_image_bytes=1000)
    url = image_server.add("/guard/big.bmp", encode_png(patterned_image(12, size=(100, 100)), "BMP"))
    assert "VITRINE_MAX_IMAGE_BYTES" in assert_error(embed(server, url), 413)


def test_download_without_content_length_over_the_byte_limit_is_413(start_shared_server, image_server):
    server = start_shared_server(max_image_bytes=1000)
    data = encode_png(patterned_image(13, size=(100, 100)), "BMP")
    url = image_server.add("/guard/big-unsized.bmp", data, send_length=False)
    assert "VITRINE_MAX_IMAGE_BYTES" in assert_error(embed(server, url), 413)


def test_download_without_content_length_is_read_to_the_end(shared_server, image_server):
    url = image_server.add("/guard/unsized.png", PNG, send_length=False)
    assert_embedded(embed(shared_server, url))


def test_slow_origin_past_the_read_timeout_is_400(start_shared_server, image_server):
    server = start_shared_server(fetch_read_timeout=0.3)
    url = image_server.add("/guard/slow.png", PNG, delay=1.5)
    # "timed out": the fetch gave up at the read timeout instead of waiting for the slow origin.
    assert "timed out" in assert_error(embed(server, url), 400)


def test_non_ascii_url_is_percent_encoded_like_a_browser(shared_server, image_server):
    image_server.add("/guard/gr%C3%B6%C3%9Fe%201.png", PNG)
    assert_embedded(embed(shared_server, image_server.url("/guard/größe 1.png")))


# Concurrency ----------------------------------------------------------------------------------------------------


def test_batch_fetches_run_concurrently(shared_server, image_server):
    urls = [image_server.add(f"/guard/slow-{i}.png", PNG, delay=0.5) for i in range(4)]
    image_server.reset_concurrency()
    response = shared_server.client.post(
        "/", json={"inputs": urls, "parameters": {"mode": "image_embedding"}}
    )
    assert response.status_code == 200
    # The image server saw the batch's requests overlap: fetched side by side, not one after another.
    assert image_server.max_in_flight >= 2


# address_kind and AddressPolicy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("fe80::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("0.0.0.0", "this-network"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
    ],
)
def test_address_kind_of_non_public_addresses(address, kind):
    assert address_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_address_kind_of_public_addresses_is_none(address):
    assert address_kind(ipaddress.ip_address(address)) is None


def test_policy_entries_are_hostnames_or_networks():
    policy = AddressPolicy.from_entries(["Images.Internal.", " 10.0.0.0/8 ", "127.0.0.1", ""])
    assert policy.allowed_hosts == frozenset({"images.internal"})
    assert policy.allowed_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
    )


def test_policy_allows_listed_names_and_networks_only():
    policy = AddressPolicy.from_entries(["images.internal", "10.0.0.0/8"])
    policy.check("IMAGES.internal.", ipaddress.ip_address("192.168.1.5"))
    policy.check("other.internal", ipaddress.ip_address("10.9.8.7"))
    policy.check("cdn.example.com", ipaddress.ip_address("8.8.8.8"))
    with pytest.raises(AddressRefused, match="private"):
        policy.check("other.internal", ipaddress.ip_address("192.168.1.5"))


def test_policy_network_covers_ipv4_mapped_ipv6():
    policy = AddressPolicy.from_entries(["127.0.0.0/8"])
    policy.check("x", ipaddress.ip_address("::ffff:127.0.0.1"))
    with pytest.raises(AddressRefused):
        AddressPolicy().check("x", ipaddress.ip_address("::ffff:127.0.0.1"))

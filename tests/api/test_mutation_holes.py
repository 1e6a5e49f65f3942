"""The realistic bugs that passed the suite unnoticed, each pinned by a test that fails on the bug:

1. the URL guard checked only the first address a name resolves to;
2. product image routes exempted from the token check;
3. a filter's ``lt`` behaving as ``lte`` (and the other bounds);
4. PUT (and PATCH) without the per-id lock;
5. composed queries that skip normalising each example;
and the two that were caught only indirectly:
6. a product's row committed before its stored image file is written;
7. a range dropped from the address table (the backstop still refused it, under another label).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpcore
import numpy as np
import pytest

from search.catalog import Catalog
from search.catalog.compose import compose, product_vector
from search.catalog.db import migrate
from search.catalog.filters import Filters
from search.catalog.records import ImageWrite, ProductWrite
from search.catalog.store import Catalog as Store
from search.errors import BadInput
from search.images.addresses import SPECIAL_IPV4, SPECIAL_IPV6, address_kind, embedded_ipv4
from search.images.fetch import AddressPolicy, FetchLimits, UrlFetcher
from search.images.store import ImageStore
from search.wiring import build_products
from tests.support.http import assert_error
from tests.support.images import b64, encode_png, patterned_image

IMAGE = b64(encode_png(patterned_image(810)))


# 1. Every address of a name ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answers",
    [("93.184.216.34", "127.0.0.1"), ("127.0.0.1", "93.184.216.34"), ("93.184.216.34", "::1")],
    ids=["public-then-loopback", "loopback-then-public", "public-then-ipv6-loopback"],
)
def test_a_name_resolving_to_public_and_private_addresses_is_refused_before_any_connection(
    monkeypatch, answers
):
    def resolve(host, port, *args, **kwargs):
        family = {4: socket.AF_INET, 6: socket.AF_INET6}
        return [
            (family[ipaddress.ip_address(a).version], socket.SOCK_STREAM, 6, "", (a, port)) for a in answers
        ]

    connects: list[object] = []
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", lambda self, *a, **k: connects.append(a))
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connects.append(a))
    fetcher = UrlFetcher(policy=AddressPolicy(), limits=FetchLimits(max_bytes=1024))
    try:
        with pytest.raises(BadInput):
            fetcher.fetch("http://mixed.example/a.png")
    finally:
        fetcher.close()
    assert connects == []  # refused on the resolver's answer, before any socket opened


# 2. Product images behind a token ---------------------------------------------------------------------------


def test_product_image_routes_need_the_token(start_server):
    server = start_server(api_tokens=["s3cret"])
    auth = {"Authorization": "Bearer s3cret"}
    assert server.client.put("/products/img", json={"image": IMAGE}, headers=auth).status_code == 201
    for path in ("/products/img/image", "/products/img/images/0", "/products/img", "/products/img/similar"):
        assert_error(server.client.get(path), 401)
        assert server.client.get(path, headers=auth).status_code == 200, path


# 3. Range bounds ----------------------------------------------------------------------------------------------


@pytest.fixture
def priced(tmp_path):
    url = f"sqlite:///{tmp_path / 'v.db'}"
    migrate(url)
    catalog = Catalog.open(url)
    vector = np.eye(8, dtype=np.float32)[0]
    catalog.upsert(
        [
            ProductWrite(
                f"p{price}",
                attributes={"price": price},
                images=[
                    ImageWrite(f"https://img.example/{price}.jpg", embedding=vector, embedding_model="m")
                ],
            )
            for price in (10, 20, 30)
        ]
    )
    service = build_products(
        catalog, model="m", index_path=tmp_path / "i.faiss", image_store=ImageStore(tmp_path)
    )
    yield service
    catalog.close()


@pytest.mark.parametrize(
    "bound, expected",
    [
        ({"lt": 20}, ["p10"]),
        ({"lte": 20}, ["p10", "p20"]),
        ({"gt": 20}, ["p30"]),
        ({"gte": 20}, ["p20", "p30"]),
        ({"gt": 10, "lt": 30}, ["p20"]),
    ],
)
def test_a_product_exactly_on_a_bound_is_in_or_out_as_the_operator_says(priced, bound, expected):
    answer = priced.list(Filters.parse({"price": bound}, 100), limit=10)
    assert [record.external_id for record in answer.records] == expected


# 4. PUT and PATCH take the product's lock -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["put", "patch"])
def test_put_and_patch_wait_for_the_products_write_lock(server, method):
    assert server.client.put("/products/locked", json={"image": IMAGE}).status_code == 201
    service = server.app.state.vitrine.components.products
    body = {"title": f"by {method}"}
    with ThreadPoolExecutor(1) as pool:
        with service.writer.locks.hold(["locked"]):
            writing = pool.submit(server.client.request, method.upper(), "/products/locked", json=body)
            time.sleep(0.5)
            assert not writing.done(), (
                f"{method.upper()} went ahead while another write of the id held its lock"
            )
        assert writing.result(20).status_code == 200


# 5. Composition normalises each example ---------------------------------------------------------------------


def test_compose_normalises_every_example_before_weighting():
    a, b = np.eye(4, dtype=np.float32)[:2]
    # A longer vector must not weigh more: only the weight does.
    np.testing.assert_allclose(compose([(3 * a, 1.0), (b, 1.0)]), compose([(a, 1.0), (b, 1.0)]), atol=1e-7)
    np.testing.assert_allclose(compose([(a, 1.0), (b, 1.0)]), (a + b) / np.sqrt(2), atol=1e-7)
    np.testing.assert_allclose(compose([(a, 1.0)], [(5 * b, 0.5)]), (a - 0.5 * b) / np.sqrt(1.25), atol=1e-7)
    np.testing.assert_allclose(compose([(a, 2.0), (7 * b, 1.0)]), (2 * a + b) / np.sqrt(5), atol=1e-7)


def test_a_products_vector_is_the_normalised_mean_of_its_normalised_images():
    a, b = np.eye(4, dtype=np.float32)[:2]
    np.testing.assert_allclose(product_vector([10 * a, b]), (a + b) / np.sqrt(2), atol=1e-7)


# 6. The stored image file exists before its row commits ------------------------------------------------------


def test_the_image_file_is_written_before_the_row_that_names_it_commits(server, monkeypatch, tmp_path):
    images_dir = tmp_path / "data" / "images"
    seen: list[bool] = []
    original = Store.upsert_reporting

    def check_files_first(self, writes):
        for write in writes:
            for image in write.images or []:
                if image.image_file:
                    seen.append((images_dir / image.image_file).is_file())
        return original(self, writes)

    monkeypatch.setattr(Store, "upsert_reporting", check_files_first)
    assert server.client.put("/products/filed", json={"image": IMAGE}).status_code == 201
    assert seen == [True]


# 7. The address table itself --------------------------------------------------------------------------------


# Written out from the IANA special-purpose registries, independently of the table under test: a range
# dropped from search/images/addresses.py stays listed here.
IANA_RANGES = [
    ("0.0.0.0/8", "this-network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.31.196.0/24", "AS112"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "AS112 direct delegation"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy prefix"),
    ("2001:2::/48", "IETF protocol assignments (Teredo, benchmarking, ORCHID, ...)"),
    ("2001:db8::/32", "documentation"),
    ("2620:4f:8000::/48", "AS112 direct delegation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
]


def _representative(network: ipaddress.IPv4Network | ipaddress.IPv6Network):
    """An address inside ``network`` that embeds no IPv4 address and lies in no narrower listed range."""
    narrower = [ipaddress.ip_network(n) for n, _ in IANA_RANGES]
    narrower = [n for n in narrower if n.version == network.version and n != network and n.subnet_of(network)]
    for offset in (2, 0x100, 0x10000, network.num_addresses // 2, network.num_addresses - 2):
        if 0 <= offset < network.num_addresses:
            ip = network.network_address + offset
            if embedded_ipv4(ip) is None and not any(ip in n for n in narrower):
                return ip
    raise AssertionError(f"no representative address for {network}")


@pytest.mark.parametrize("network, kind", IANA_RANGES, ids=[n for n, _ in IANA_RANGES])
def test_every_special_purpose_range_is_refused_under_its_own_name(network, kind):
    """A range dropped from the table would fall to the "non-global" backstop (or a wider range): the
    name tells."""
    ip = _representative(ipaddress.ip_network(network))
    assert address_kind(ip) == kind, str(ip)


def test_the_table_lists_every_range_of_the_registries():
    listed = {(str(net), kind) for net, kind in (*SPECIAL_IPV4, *SPECIAL_IPV6)}
    missing = [entry for entry in IANA_RANGES if entry not in listed and entry[0] != "2001:2::/48"]
    assert missing == []


def test_addresses_just_outside_the_private_ranges_are_public():
    for ip in ("9.255.255.255", "11.0.0.0", "172.15.255.255", "172.32.0.0", "192.167.255.255", "192.169.0.0"):
        assert address_kind(ipaddress.ip_address(ip)) is None, ip


# Found by mutation testing (make mutants) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, kind",
    [
        # 8.8.8.8 as a Teredo client: public inside, but a tunnel relay is no image host.
        (
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
            "IETF protocol assignments (Teredo, benchmarking, ORCHID, ...)",
        ),
        # 127.0.0.1 as a Teredo client: named by what it reaches.
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),
    ],
)
def test_teredo_is_refused_whatever_it_embeds_and_named_by_a_private_client(address, kind):
    assert address_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "address, refused",
    [("10.0.0.1", True), ("240.0.0.1", True), ("224.0.0.1", True), ("ff02::1", True), ("8.8.8.8", False)],
)
def test_an_address_the_registries_miss_falls_to_pythons_flags(monkeypatch, address, refused):
    """The backstop behind the tables: not global, reserved or multicast (Python calls 224.0.0.1 and
    ff02::1 "global") is refused as "non-global"."""
    from search.images import addresses

    monkeypatch.setattr(addresses, "SPECIAL_IPV4", ())
    monkeypatch.setattr(addresses, "SPECIAL_IPV6", ())
    assert address_kind(ipaddress.ip_address(address)) == ("non-global" if refused else None)

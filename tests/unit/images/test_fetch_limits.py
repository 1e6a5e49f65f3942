"""Issue 6, classes 1 and 7: no origin can hold a fetch (or the fetch slots) for long, and the address
guard refuses the whole special-purpose registry before any socket opens, telling the caller nothing
about internal names or networks."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from search.errors import BadInput
from search.images.addresses import address_kind
from search.images.fetch import AddressPolicy, FetchLimits, UrlFetcher
from tests.support.http import assert_error
from tests.support.images import encode_png, patterned_image

PNG = encode_png(patterned_image(21))


class DribblingOrigin:
    """A real TCP server on 127.0.0.1 that answers with a status line, then one header byte every
    ``interval`` seconds for as long as the client stays (at most ``limit`` seconds)."""

    def __init__(self, interval: float = 0.1, limit: float = 30.0) -> None:
        self.interval = interval
        self.limit = limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.open_connections = 0
        self.max_open = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/slow.png") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._dribble, args=(conn,), daemon=True).start()

    def _dribble(self, conn: socket.socket) -> None:
        self.open_connections += 1
        self.max_open = max(self.max_open, self.open_connections)
        started = time.monotonic()
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self._stop.is_set() and time.monotonic() - started < self.limit:
                conn.sendall(b"a")
                time.sleep(self.interval)
        except OSError:
            pass  # the client gave up: what the test wants
        finally:
            self.open_connections -= 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


@pytest.fixture
def dribbling() -> Iterator[DribblingOrigin]:
    origin = DribblingOrigin()
    yield origin
    origin.close()


def loopback_fetcher(total: float, read: float = 5.0) -> UrlFetcher:
    return UrlFetcher(
        policy=AddressPolicy.from_entries(["127.0.0.1"]),
        limits=FetchLimits(max_bytes=1_000_000, connect_timeout=2, read_timeout=read, total_timeout=total),
    )


# 1. Hangs --------------------------------------------------------------------------------------------------


def test_an_origin_dribbling_header_bytes_is_cut_at_the_total_deadline(dribbling):
    # Each byte arrives well inside the read timeout, so only the one deadline per fetch can end it.
    fetcher = loopback_fetcher(total=1.0, read=5.0)
    try:
        with pytest.raises(BadInput, match="VITRINE_FETCH_TOTAL_TIMEOUT"):
            fetcher.fetch(dribbling.url())
    finally:
        fetcher.close()


def test_one_request_of_slow_urls_leaves_fetch_slots_for_other_callers(
    start_shared_server, image_server, dribbling
):
    server = start_shared_server(
        fetch_concurrency=4, fetch_concurrency_per_request=2, fetch_total_timeout=3.0
    )
    slow = {
        "inputs": [dribbling.url(f"/s{i}.png") for i in range(8)],
        "parameters": {"mode": "image_embedding"},
    }
    outcome: dict[str, object] = {}

    def send_slow() -> None:
        outcome["slow"] = server.client.post("/", json=slow).status_code

    thread = threading.Thread(target=send_slow)
    thread.start()
    for _ in range(500):  # until the slow request holds its slots at the origin
        if dribbling.open_connections >= 2:
            break
        time.sleep(0.01)
    fast = server.client.post(
        "/",
        json={"inputs": image_server.add("/fair/fast.png", PNG), "parameters": {"mode": "image_embedding"}},
    )
    slow_still_running = thread.is_alive()
    thread.join()
    assert fast.status_code == 200, fast.text
    # Answered while the slow request was still waiting on its origin: it never held every slot.
    assert slow_still_running
    assert dribbling.max_open == 2  # its per-request share, never more
    assert outcome["slow"] == 400


# 7. Addresses ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "192.0.0.8",  # IETF protocol assignments (Python 3.11 calls it global)
        "192.0.0.170",
        "100.64.0.1",  # carrier-grade NAT
        "198.18.0.1",  # benchmarking
        "192.0.2.1",
        "198.51.100.7",
        "203.0.113.9",
        "192.88.99.1",
        "255.255.255.255",
        "fec0::1",  # site-local (Python 3.11 calls it global)
        "2001:db8::1",
        "3fff::1",
        "5f00::1",
        "100::1",
        "64:ff9b:1::1",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "::ffff:10.0.0.1",
        "::ffff:0:a00:1",  # IPv4-translated
        "::a00:1",  # IPv4-compatible
        "2002:c0a8:0101::1",  # 6to4 of 192.168.1.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "fd12:3456::1",
    ],
)
def test_special_purpose_addresses_are_not_public(address):
    assert address_kind(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_stay_public(address):
    assert address_kind(ipaddress.ip_address(address)) is None


def test_refusal_happens_before_any_socket_connects():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    fetcher = UrlFetcher(policy=AddressPolicy(), limits=FetchLimits(max_bytes=1000))
    try:
        with pytest.raises(BadInput, match="URL refused"):
            fetcher.fetch(f"http://127.0.0.1:{port}/a.png")
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected
    finally:
        fetcher.close()
        listener.close()


def test_refusals_tell_the_caller_nothing_about_addresses_or_errors(start_shared_server, caplog):
    server = start_shared_server(url_allow_hosts=[])
    messages = []
    with caplog.at_level(logging.INFO, logger="search.images.fetch"):
        for url in ("http://10.1.2.3/a.png", "http://192.0.0.8/a.png", "http://no-such-host.invalid/a.png"):
            body = {"inputs": url, "parameters": {"mode": "image_embedding"}}
            messages.append(assert_error(server.client.post("/", json=body), 400))
    for message in messages:
        assert "URL refused" in message
        assert "Errno" not in message and "private address" not in message and "cannot resolve" not in message
    # A private address and an unresolvable name read the same to the caller.
    assert messages[0].replace("10.1.2.3", "H") == messages[2].replace("no-such-host.invalid", "H")
    # The operator's log keeps the detail.
    assert "private address 10.1.2.3" in caplog.text
    assert "cannot resolve no-such-host.invalid" in caplog.text

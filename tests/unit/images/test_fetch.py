"""Fetching image URLs (search/images/fetch.py) against real loopback servers, with name resolution under
the test's control: the address policy, every address of a name, redirects, the size limit declared and
streamed, the three time limits, the errors a caller may see, and how URLs are made sendable."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpcore
import pytest

from search.errors import BadInput, TooLarge
from search.images import fetch
from search.images.fetch import (
    AddressPolicy,
    AddressRefused,
    DeadlinePassed,
    FetchLimits,
    GuardedBackend,
    UrlFetcher,
    _generic_failure,
    _header,
    _prepare_url,
    _remaining,
    _short,
)
from tests.support.http import ImageServer, Route

BODY = bytes(range(256)) * 40  # 10,240 bytes


class Resolver:
    """``socket.getaddrinfo`` under the test's control: names map to address lists, IP literals resolve
    to themselves, anything else does not resolve. Records the thread each lookup ran on."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.threads: list[tuple[str, str]] = []
        self.block: threading.Event | None = None

    def __call__(self, host, port, *args, **kwargs):
        self.threads.append((host, threading.current_thread().name))
        if self.block is not None:
            self.block.wait(10)
        if host in self.names:
            answers = self.names[host]
        else:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            answers = [host]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answers
        ]


@pytest.fixture
def resolver(monkeypatch) -> Resolver:
    resolver = Resolver()
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    return resolver


@pytest.fixture
def origin() -> Iterator[ImageServer]:
    server = ImageServer()
    yield server
    server.close()


def fetcher_for(*allow: str, **limits: float) -> UrlFetcher:
    settings = {"max_bytes": 20_000, "connect_timeout": 2.0, "read_timeout": 5.0, "total_timeout": 10.0}
    settings.update(limits)
    return UrlFetcher(
        policy=AddressPolicy.from_entries(allow or ["127.0.0.1"]), limits=FetchLimits(**settings)
    )


@pytest.fixture
def fetcher() -> Iterator[UrlFetcher]:
    fetcher = fetcher_for()
    yield fetcher
    fetcher.close()


def refusal(url: str, fetcher: UrlFetcher) -> str:
    with pytest.raises(BadInput) as refused:
        fetcher.fetch(url)
    return str(refused.value)


# The deadline ----------------------------------------------------------------------------------------------


def test_without_a_fetch_under_way_the_timeout_is_kept():
    assert _remaining(3.0) == 3.0
    assert _remaining(None) is None


def test_within_a_fetch_a_timeout_is_shortened_to_the_deadline():
    token = fetch._DEADLINE.set(time.monotonic() + 100)
    try:
        assert _remaining(2.0) == 2.0
        assert 99 < _remaining(None) <= 100
        assert 99 < _remaining(500.0) <= 100
    finally:
        fetch._DEADLINE.reset(token)


def test_a_passed_deadline_ends_any_wait():
    token = fetch._DEADLINE.set(time.monotonic() - 1)
    try:
        with pytest.raises(DeadlinePassed) as passed:
            _remaining(5.0)
        assert str(passed.value) == "the fetch deadline passed"
        with pytest.raises(DeadlinePassed):
            _remaining(None)
    finally:
        fetch._DEADLINE.reset(token)


def test_the_default_limits():
    assert FetchLimits(max_bytes=1) == FetchLimits(1, 5.0, 10.0, 30.0, 5)
    assert UrlFetcher.user_agent == "vitrine/0.1 (+image fetch)"


# The address policy ----------------------------------------------------------------------------------------


def test_policy_entries_are_networks_or_host_names():
    policy = AddressPolicy.from_entries([" 10.0.0.0/8 ", "", "   ", "Shop.Example.", "192.168.1.5/24", "::1"])
    assert policy.allowed_hosts == frozenset({"shop.example"})
    assert policy.allowed_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.0/24"),
        ipaddress.ip_network("::1/128"),
    )


def test_an_allowed_host_may_resolve_anywhere_whatever_its_case_or_final_dot():
    policy = AddressPolicy.from_entries(["shop.example"])
    policy.check("SHOP.Example.", ipaddress.ip_address("127.0.0.1"))
    with pytest.raises(AddressRefused):
        policy.check("other.example", ipaddress.ip_address("127.0.0.1"))


def test_an_allowed_network_covers_its_addresses_also_written_as_ipv6():
    policy = AddressPolicy.from_entries(["10.0.0.0/8"])
    policy.check("a", ipaddress.ip_address("10.1.2.3"))
    policy.check("a", ipaddress.ip_address("::ffff:10.1.2.3"))  # IPv4-mapped
    with pytest.raises(AddressRefused, match=r"private address 172\.16\.0\.1"):
        policy.check("a", ipaddress.ip_address("172.16.0.1"))


def test_a_public_address_passes_and_a_special_one_is_refused_under_its_kind():
    policy = AddressPolicy()
    policy.check("shop.example", ipaddress.ip_address("93.184.216.34"))
    with pytest.raises(AddressRefused) as refused:
        policy.check("shop.example", ipaddress.ip_address("127.0.0.1"))
    assert str(refused.value) == "shop.example resolves to loopback address 127.0.0.1"


# Resolving and connecting ----------------------------------------------------------------------------------


def test_a_name_is_resolved_on_the_resolver_threads_and_fetched(resolver, origin):
    origin.add("/a.png", BODY)
    resolver.names["shop.test"] = ["127.0.0.1"]
    fetcher = fetcher_for("shop.test")
    try:
        assert fetcher.fetch(origin.url("/a.png", host="shop.test")) == BODY
    finally:
        fetcher.close()
    lookups = [name for host, name in resolver.threads if host == "shop.test"]
    assert lookups and all(name.startswith("vitrine-resolve") for name in lookups)


def test_every_address_of_a_name_is_checked(resolver, origin):
    origin.add("/a.png", BODY)
    resolver.names["mixed.test"] = ["127.0.0.1", "10.0.0.1"]
    fetcher = fetcher_for("127.0.0.0/8")
    try:
        message = refusal(origin.url("/a.png", host="mixed.test"), fetcher)
    finally:
        fetcher.close()
    assert message == (
        "URL refused: mixed.test does not resolve to a public address "
        "(an operator can allow private hosts with VITRINE_URL_ALLOW_HOSTS)"
    )
    assert origin.hits == {}


def test_an_address_with_a_zone_is_checked_without_it(resolver, caplog):
    resolver.names["zoned.test"] = ["fe80::1%2"]
    fetcher = fetcher_for()
    try:
        with caplog.at_level(logging.INFO, logger="search.images.fetch"):
            refusal("http://zoned.test/a.png", fetcher)
    finally:
        fetcher.close()
    assert caplog.records[-1].getMessage() == (
        "URL refused: http://zoned.test/a.png (zoned.test resolves to link-local address fe80::1)"
    )


def test_the_next_address_is_tried_when_one_refuses_the_connection(resolver, origin):
    origin.add("/a.png", BODY)
    resolver.names["two.test"] = ["127.0.0.2", "127.0.0.1"]  # nothing listens on 127.0.0.2
    fetcher = fetcher_for("127.0.0.0/8")
    try:
        assert fetcher.fetch(origin.url("/a.png", host="two.test")) == BODY
    finally:
        fetcher.close()


def test_when_no_address_connects_the_caller_is_told_so(resolver, origin, fetcher):
    resolver.names["none.test"] = ["127.0.0.2", "127.0.0.3"]
    fetcher = fetcher_for("127.0.0.0/8")
    try:
        message = refusal(origin.url("/a.png", host="none.test"), fetcher)
    finally:
        fetcher.close()
    assert message == f"fetching http://none.test:{origin.port}/a.png failed: could not connect"


def test_a_name_that_does_not_resolve_reads_like_a_refused_one(resolver, caplog, fetcher):
    with caplog.at_level(logging.INFO, logger="search.images.fetch"):
        message = refusal("http://nowhere.test/a.png", fetcher)
    assert message.startswith("URL refused: nowhere.test does not resolve to a public address")
    assert "cannot resolve nowhere.test" in caplog.text


def test_a_name_the_idna_codec_refuses_is_a_refusal_not_a_crash(fetcher):
    # A 64-character label: socket.getaddrinfo's idna encoding raises UnicodeError before any lookup.
    message = refusal(f"http://{'a' * 64}.test/a.png", fetcher)
    assert message.startswith(f"URL refused: {'a' * 64}.test does not resolve to a public address")


def test_a_lookup_slower_than_the_connect_timeout_is_a_timeout(resolver):
    resolver.block = threading.Event()
    fetcher = fetcher_for("slow.test", connect_timeout=0.2, total_timeout=10.0)
    try:
        message = refusal("http://slow.test/a.png", fetcher)
    finally:
        resolver.block.set()
        fetcher.close()
    assert message == "fetching http://slow.test/a.png timed out"


def test_a_lookup_slower_than_the_whole_fetch_names_the_total_timeout(resolver):
    resolver.block = threading.Event()
    fetcher = fetcher_for("slow.test", connect_timeout=5.0, total_timeout=0.3)
    try:
        message = refusal("http://slow.test/a.png", fetcher)
    finally:
        resolver.block.set()
        fetcher.close()
    assert message == (
        "fetching http://slow.test/a.png timed out: not done within 0.3 s (VITRINE_FETCH_TOTAL_TIMEOUT)"
    )


def test_closing_does_not_wait_for_a_stuck_lookup(resolver):
    resolver.block = threading.Event()
    fetcher = fetcher_for("stuck.test", connect_timeout=0.1)
    refusal("http://stuck.test/a.png", fetcher)  # the lookup is still blocked in its thread
    closer = threading.Thread(target=fetcher.close)
    closer.start()
    closer.join(5)
    waited = closer.is_alive()
    resolver.block.set()
    closer.join()
    assert not waited


def test_unix_sockets_are_never_connected():
    backend = GuardedBackend(AddressPolicy())
    try:
        with pytest.raises(httpcore.ConnectError) as refused:
            backend.connect_unix_socket("/tmp/x.sock")
        assert str(refused.value) == "unix sockets are not fetched"
        backend.sleep(0.001)
    finally:
        backend.close()


# The connection: reads and writes end by the deadline, TLS included ----------------------------------------


class Echo:
    """A TCP server on 127.0.0.1 that echoes what it receives, optionally over TLS, and holds a silent
    connection open for ``hold`` seconds."""

    def __init__(self, context: ssl.SSLContext | None = None, hold: float = 3.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.context = context
        self.hold = hold
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            conn.settimeout(self.hold)
            data = conn.recv(1024)
            if data:
                conn.sendall(data)
            conn.recv(1024)  # then silence until the client goes or ``hold`` passes
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.close()


def test_a_connection_reads_and_writes_and_knows_its_peer():
    echo = Echo()
    backend = GuardedBackend(AddressPolicy.from_entries(["127.0.0.1"]))
    try:
        stream = backend.connect_tcp("127.0.0.1", echo.port, timeout=2)
        stream.write(b"ping", timeout=2)
        assert stream.read(1024, timeout=2) == b"ping"
        assert stream.get_extra_info("server_addr") == ("127.0.0.1", echo.port)
        stream.close()
    finally:
        backend.close()
        echo.close()


class Silent:
    """A TCP server on 127.0.0.1 that accepts one connection and never reads from it, with a small
    receive buffer: a large write to it fills both buffers and then waits."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited when accepted
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.done.wait(5.0)
        conn.close()

    def close(self) -> None:
        self.done.set()
        self.listener.close()


# More than the client's send buffer (4 MiB at most here) and the silent server's 4 KiB receive buffer.
LARGE = 16 * 1024 * 1024


def test_a_write_without_a_timeout_still_ends_at_the_fetch_deadline():
    silent = Silent()
    backend = GuardedBackend(AddressPolicy.from_entries(["127.0.0.1"]))
    token = fetch._DEADLINE.set(time.monotonic() + 0.3)
    try:
        stream = backend.connect_tcp("127.0.0.1", silent.port)
        # Without the deadline this write would wait until the server hangs up.
        with pytest.raises(httpcore.WriteTimeout):
            stream.write(b"x" * LARGE)
        stream.close()
    finally:
        fetch._DEADLINE.reset(token)
        backend.close()
        silent.close()


def test_a_request_the_origin_does_not_take_is_cut_at_the_write_timeout():
    # A request larger than the socket buffers (here a huge User-Agent) waits for the origin to read it:
    # that wait ends at the write timeout (the read timeout's value), well before the total deadline.
    silent = Silent()
    fetcher = UrlFetcher(
        policy=AddressPolicy.from_entries(["127.0.0.1"]),
        limits=FetchLimits(max_bytes=20_000, connect_timeout=2.0, read_timeout=0.3, total_timeout=4.0),
        user_agent="x" * LARGE,
    )
    url = f"http://127.0.0.1:{silent.port}/a.png"
    try:
        assert refusal(url, fetcher) == f"fetching {url} timed out"
    finally:
        fetcher.close()
        silent.close()


def test_a_read_without_a_timeout_still_ends_at_the_fetch_deadline():
    echo = Echo(hold=3.0)
    backend = GuardedBackend(AddressPolicy.from_entries(["127.0.0.1"]))
    token = fetch._DEADLINE.set(time.monotonic() + 0.3)
    try:
        stream = backend.connect_tcp("127.0.0.1", echo.port)
        # Without the deadline this read would wait until the server hangs up, then return b"".
        with pytest.raises(httpcore.ReadTimeout):
            stream.read(1024)
        stream.close()
    finally:
        fetch._DEADLINE.reset(token)
        backend.close()
        echo.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(folder / "key.pem"),
         "-out", str(folder / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return folder


def test_tls_is_started_on_the_guarded_connection_and_keeps_the_deadline(certificate):
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    echo = Echo(server_context, hold=3.0)
    client_context = ssl.create_default_context(cafile=str(certificate / "cert.pem"))
    backend = GuardedBackend(AddressPolicy.from_entries(["127.0.0.1"]))
    try:
        stream = backend.connect_tcp("127.0.0.1", echo.port, timeout=2)
        tls = stream.start_tls(client_context, server_hostname="localhost", timeout=2)
        assert isinstance(tls, fetch.DeadlineStream)
        assert tls.get_extra_info("ssl_object").server_hostname == "localhost"
        tls.write(b"secret", timeout=2)
        assert tls.read(1024, timeout=2) == b"secret"
        token = fetch._DEADLINE.set(time.monotonic() + 0.3)
        try:
            with pytest.raises(httpcore.ReadTimeout):
                tls.read(1024)
        finally:
            fetch._DEADLINE.reset(token)
        tls.close()
    finally:
        backend.close()
        echo.close()


@pytest.mark.parametrize("deadline", [None, 0.3], ids=["handshake-timeout", "fetch-deadline"])
def test_a_tls_handshake_that_never_completes_ends_in_time(deadline):
    # A listener that never accepts: the connection opens, the ClientHello is never answered. The
    # listener closes after 5 s, so a handshake without a time limit fails with another error.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    closer = threading.Timer(5, listener.close)
    closer.start()
    backend = GuardedBackend(AddressPolicy.from_entries(["127.0.0.1"]))
    token = fetch._DEADLINE.set(time.monotonic() + deadline) if deadline else None
    try:
        stream = backend.connect_tcp("127.0.0.1", port, timeout=2)
        with pytest.raises(httpcore.ConnectTimeout):
            stream.start_tls(
                ssl.create_default_context(), server_hostname="localhost", timeout=None if deadline else 0.3
            )
        stream.close()
    finally:
        if token is not None:
            fetch._DEADLINE.reset(token)
        backend.close()
        closer.cancel()
        listener.close()


def test_an_origin_with_a_certificate_nobody_signed_is_not_fetched(certificate, resolver):
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    echo = Echo(server_context, hold=1.0)
    resolver.names["localhost"] = ["127.0.0.1"]
    fetcher = fetcher_for("localhost")
    try:
        message = refusal(f"https://localhost:{echo.port}/a.png", fetcher)
    finally:
        fetcher.close()
        echo.close()
    assert message == f"fetching https://localhost:{echo.port}/a.png failed: could not connect"


# Requests, answers and redirects ---------------------------------------------------------------------------


def test_the_request_names_the_fetcher_and_asks_for_an_image(origin, fetcher):
    url = origin.add("/a.png", BODY)
    assert fetcher.fetch(url) == BODY
    headers = origin.request_headers["/a.png"]
    assert headers["User-Agent"] == "vitrine/0.1 (+image fetch)"
    assert headers["Accept"] == "image/*"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_each_redirect_status_is_followed_relative_to_the_url(origin, fetcher, status):
    origin.add("/images/b.png", BODY)
    assert fetcher.fetch(origin.redirect("/a.png", "/images/b.png", status=status)) == BODY
    assert origin.hits == {"/a.png": 1, "/images/b.png": 1}


@pytest.mark.parametrize("status", [300, 304, 204, 404, 500])
def test_any_other_status_is_an_error_naming_it(origin, fetcher, status):
    url = origin.url("/a.png")
    origin.routes["/a.png"] = Route(status=status, headers={"Location": "/b.png"})
    assert refusal(url, fetcher) == f"fetching {url} failed: HTTP {status}"


def test_a_redirect_without_a_location_is_an_error(origin, fetcher):
    url = origin.add("/a.png", status=302)
    assert refusal(url, fetcher) == f"fetching {url} failed: HTTP 302"


def test_a_malformed_location_is_the_origins_fault(origin, fetcher):
    url = origin.redirect("/a.png", "http://[::1")
    assert refusal(url, fetcher) == f"fetching {url} failed: bad redirect to http://[::1"


def test_redirects_are_followed_up_to_the_limit_and_no_further(origin):
    origin.add("/3.png", BODY)
    for hop in range(3):
        origin.redirect(f"/{hop}.png", f"/{hop + 1}.png")
    fetcher = fetcher_for(max_redirects=3)
    try:
        assert fetcher.fetch(origin.url("/0.png")) == BODY
    finally:
        fetcher.close()
    fetcher = fetcher_for(max_redirects=2)
    try:
        assert refusal(origin.url("/0.png"), fetcher) == (
            f"fetching {origin.url('/3.png')} failed: more than 2 redirects"
        )
    finally:
        fetcher.close()


def test_a_redirect_goes_through_the_guard_again(origin, resolver):
    url = origin.redirect("/a.png", "http://10.0.0.1/secret.png")
    fetcher = fetcher_for("127.0.0.1")
    try:
        assert refusal(url, fetcher).startswith("URL refused: 10.0.0.1 does not resolve to a public")
    finally:
        fetcher.close()


# Size ------------------------------------------------------------------------------------------------------


def test_a_body_of_exactly_the_limit_is_fetched_declared_or_not(origin):
    fetcher = fetcher_for(max_bytes=len(BODY))
    try:
        assert fetcher.fetch(origin.add("/a.png", BODY)) == BODY
        assert fetcher.fetch(origin.add("/b.png", BODY, send_length=False)) == BODY
    finally:
        fetcher.close()


def test_a_body_read_in_several_chunks_is_joined_as_sent(origin):
    body = bytes(range(256)) * 400  # 102,400 bytes: several reads
    fetcher = fetcher_for(max_bytes=200_000)
    try:
        assert fetcher.fetch(origin.add("/a.png", body, send_length=False)) == body
    finally:
        fetcher.close()


def test_a_declared_length_over_the_limit_is_refused_with_the_numbers(origin):
    fetcher = fetcher_for(max_bytes=len(BODY) - 1)
    url = origin.add("/a.png", BODY)
    try:
        with pytest.raises(TooLarge) as refused:
            fetcher.fetch(url)
    finally:
        fetcher.close()
    assert str(refused.value) == f"{url} is 10240 bytes; the limit is 10239 (VITRINE_MAX_IMAGE_BYTES)"


def test_a_body_without_a_length_is_counted_across_its_chunks(origin):
    # 100,000 bytes arrive in several reads, each under the 80,000-byte limit.
    fetcher = fetcher_for(max_bytes=80_000)
    url = origin.add("/a.png", b"x" * 100_000, send_length=False)
    try:
        with pytest.raises(TooLarge) as refused:
            fetcher.fetch(url)
    finally:
        fetcher.close()
    assert str(refused.value) == f"{url} is larger than 80000 bytes (VITRINE_MAX_IMAGE_BYTES)"


# Time ------------------------------------------------------------------------------------------------------


def test_an_origin_slower_than_the_read_timeout_is_a_timeout(origin):
    fetcher = fetcher_for(read_timeout=0.2, total_timeout=3.0)
    url = origin.add("/a.png", BODY, delay=1.0)
    try:
        assert refusal(url, fetcher) == f"fetching {url} timed out"
    finally:
        fetcher.close()


def test_a_connect_that_never_completes_is_cut_at_the_connect_timeout():
    # A listener whose accept queue is full: the next connect's handshake is never answered.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    fetcher = fetcher_for(connect_timeout=0.3, total_timeout=3.0)
    try:
        message = refusal(f"http://127.0.0.1:{port}/a.png", fetcher)
    finally:
        fetcher.close()
        for filler in fillers:
            filler.close()
        listener.close()
    assert message == f"fetching http://127.0.0.1:{port}/a.png timed out"


# Failures a caller may see ---------------------------------------------------------------------------------


class BadOrigin:
    """A TCP server on 127.0.0.1 that answers each connection with ``reply`` (then, with ``reset``,
    resets the connection)."""

    def __init__(self, reply: bytes, reset: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.reply, self.reset = reply, reset
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.recv(65536)
        conn.sendall(self.reply)
        if self.reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize(
    ("reply", "reset", "said"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", False, "the origin did not answer with valid HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", True, "the connection failed"),
    ],
    ids=["garbage", "reset"],
)
def test_a_broken_origin_is_named_by_the_kind_of_failure_only(fetcher, reply, reset, said, caplog):
    bad = BadOrigin(reply, reset)
    try:
        url = f"http://127.0.0.1:{bad.port}/a.png"
        with caplog.at_level(logging.INFO, logger="search.images.fetch"):
            assert refusal(url, fetcher) == f"fetching {url} failed: {said}"
    finally:
        bad.close()
    # The operator's log keeps the error itself.
    logged = caplog.records[-1].getMessage()
    assert logged.startswith(f"fetching {url} failed: ") and logged.endswith(")")  # the error's repr


def test_a_closed_port_could_not_be_connected(fetcher):
    port = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{port.getsockname()[1]}/a.png"
    port.close()
    assert refusal(url, fetcher) == f"fetching {url} failed: could not connect"


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (httpcore.ConnectError("x"), "could not connect"),
        (httpcore.UnsupportedProtocol("x"), "unsupported protocol"),
        (httpcore.RemoteProtocolError("x"), "the origin did not answer with valid HTTP"),
        (httpcore.ReadError("x"), "the connection failed"),
    ],
)
def test_each_failure_kind_has_its_words(error, said):
    assert _generic_failure(error) == said


# URLs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("http://shop.example/a.png?x=1&y=[2]#top", "http://shop.example/a.png?x=1&y=[2]#top"),
        ("http://h/a b/%41.png?q=a b", "http://h/a%20b/%41.png?q=a%20b"),
        (
            "http://bücher.example/ä.png?q=ü#f ä",
            "http://xn--bcher-kva.example/%C3%A4.png?q=%C3%BC#f%20%C3%A4",
        ),
        ("https://bücher.example:8443/a", "https://xn--bcher-kva.example:8443/a"),
        ("http://üser:pw@h/a", "http://%C3%BCser:pw@h/a"),
        ("http://h/a\tb", "http://h/ab"),  # tabs and newlines are dropped (WHATWG), spaces encoded
    ],
)
def test_urls_are_made_ascii_like_a_browser_does(url, sent):
    assert _prepare_url(url) == sent


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:99999/a.png", "URL refused: not a valid URL: http://h:99999/a.png"),
        ("ftp://h/a.png", "URL refused: only http and https URLs with a host are fetched, not ftp://h/a.png"),
        ("http:///a.png", "URL refused: only http and https URLs with a host are fetched, not http:///a.png"),
        ("http://" + "ä" * 70 + "/a", "URL refused: not a valid host name: http://" + "ä" * 70 + "/a"),
    ],
)
def test_urls_that_cannot_be_fetched_are_refused(url, message):
    with pytest.raises(BadInput) as refused:
        _prepare_url(url)
    assert str(refused.value) == message


def test_a_header_is_found_whatever_its_case_and_trimmed():
    headers = [(b"X-A", b"1"), (b"Content-LENGTH", b" 12 ")]
    assert _header(headers, b"content-length") == "12"
    assert _header(headers, b"location") is None


def test_long_urls_are_shortened_in_messages():
    assert _short("u" * 120) == "u" * 120
    assert _short("u" * 121) == "u" * 120 + "..."

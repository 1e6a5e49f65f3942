"""Fetching image URLs on a caller's behalf, guarded against server-side request forgery.

The address check lives in the network backend, at connect time: the address that is checked is the
address the socket connects to, so DNS rebinding between a check and the connect cannot slip through,
and every redirect hop opens its connection through the same check.
"""

from __future__ import annotations

import contextvars
import functools
import ipaddress
import logging
import socket
import ssl
import string
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import httpcore

from search.errors import BadInput, TooLarge
from search.images.addresses import IPAddress, address_kind, embedded_ipv4

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_REDIRECTS = {301, 302, 303, 307, 308}

# The monotonic time by which the current fetch (all hops, connect, headers and body) must be done.
# A context variable, because pooled connections are shared: the deadline is the reader's, not the socket's.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("fetch_deadline", default=None)


class AddressRefused(Exception):
    """A URL resolved to an address the guard does not allow (the detail is for the log only)."""


class DeadlinePassed(httpcore.TimeoutException):
    """The fetch's one deadline passed: however slowly the origin dribbles, the fetch ends here."""


def _remaining(timeout: float | None) -> float | None:
    """``timeout`` shortened to what is left of the current fetch's deadline."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlinePassed("the fetch deadline passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the deadline of the fetch using it."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _remaining(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _remaining(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a fetch may connect to: public ones, plus an explicit allow-list."""

    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> AddressPolicy:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def check(self, host: str, ip: IPAddress) -> None:
        if host.lower().rstrip(".") in self.allowed_hosts:
            return
        if any(ip in net or (embedded_ipv4(ip) or ip) in net for net in self.allowed_networks):
            return
        kind = address_kind(ip)
        if kind is not None:
            raise AddressRefused(f"{host} resolves to {kind} address {ip}")


class GuardedBackend(httpcore.NetworkBackend):
    """Resolves the host itself, refuses disallowed addresses, and connects to the checked address."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.SyncBackend()
        # getaddrinfo has no timeout of its own; a resolver thread lets the deadline cut a slow lookup.
        self._resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vitrine-resolve")

    def close(self) -> None:
        self._resolver.shutdown(wait=False, cancel_futures=True)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable | None = None,
    ) -> httpcore.NetworkStream:
        lookup = self._resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            infos = lookup.result(timeout=_remaining(timeout))
        except FutureTimeout:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except (OSError, UnicodeError) as exc:  # UnicodeError: the idna codec refuses the name
            # To the caller an unresolvable name looks like a refused one: no map of internal DNS.
            raise AddressRefused(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        for ip in addresses:
            self._policy.check(host, ip)  # every address, so a mixed answer cannot be exploited
        last_error: Exception | None = None
        for ip in addresses:
            try:
                stream = self._inner.connect_tcp(
                    str(ip), port, _remaining(timeout), local_address, socket_options
                )
                return DeadlineStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        raise last_error or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(self, *args: object, **kwargs: object) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's CA certificates, loaded once per process: loading them costs ~20 ms, each loader a
    server or a command builds would pay it again, and a context is safe to share between pools."""
    return ssl.create_default_context()


@dataclass
class FetchLimits:
    max_bytes: int
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    max_redirects: int = 5


@dataclass
class UrlFetcher:
    """Downloads http(s) URLs within size and time limits, following redirects through the guard."""

    policy: AddressPolicy
    limits: FetchLimits
    user_agent: str = "vitrine/0.1 (+image fetch)"
    _pool: httpcore.ConnectionPool = field(init=False, repr=False)
    _backend: GuardedBackend = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._backend = GuardedBackend(self.policy)
        self._pool = httpcore.ConnectionPool(
            ssl_context=_tls_context(),
            max_connections=64,
            network_backend=self._backend,
        )

    def close(self) -> None:
        self._pool.close()
        self._backend.close()

    def fetch(self, url: str) -> bytes:
        """The body of ``url``. Raises BadInput (refused, unreachable, HTTP error, too slow) or TooLarge.

        One deadline covers the whole fetch: resolving, connecting, every redirect hop, the headers and
        the body. An origin that dribbles header bytes is cut at the deadline like one that dribbles body.
        """
        token = _DEADLINE.set(time.monotonic() + self.limits.total_timeout)
        try:
            return self._follow(url)
        finally:
            _DEADLINE.reset(token)

    def _follow(self, url: str) -> bytes:
        for _hop in range(self.limits.max_redirects + 1):
            url = _prepare_url(url)
            status, location, body = self._get_once(url)
            if status in _REDIRECTS and location:
                try:
                    url = urljoin(url, location)
                except ValueError:  # a malformed Location is the origin's fault, not a server bug
                    raise BadInput(
                        f"fetching {_short(url)} failed: bad redirect to {_short(location)}"
                    ) from None
                continue
            if status != 200:
                raise BadInput(f"fetching {_short(url)} failed: HTTP {status}")
            return body
        raise BadInput(f"fetching {_short(url)} failed: more than {self.limits.max_redirects} redirects")

    def _get_once(self, url: str) -> tuple[int, str | None, bytes]:
        timeouts = {
            "connect": self.limits.connect_timeout,
            "read": self.limits.read_timeout,
            "write": self.limits.read_timeout,
            "pool": self.limits.connect_timeout,
        }
        headers = [(b"User-Agent", self.user_agent.encode()), (b"Accept", b"image/*")]
        try:
            timeouts["pool"] = _remaining(timeouts["pool"])
            with self._pool.stream("GET", url, headers=headers, extensions={"timeout": timeouts}) as response:
                location = _header(response.headers, b"location")
                if response.status != 200:
                    return response.status, location, b""
                declared = _header(response.headers, b"content-length")
                if declared and declared.isdigit() and int(declared) > self.limits.max_bytes:
                    raise TooLarge(
                        f"{_short(url)} is {int(declared)} bytes; the limit is {self.limits.max_bytes} "
                        "(VITRINE_MAX_IMAGE_BYTES)"
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_stream():
                    size += len(chunk)
                    if size > self.limits.max_bytes:
                        raise TooLarge(
                            f"{_short(url)} is larger than {self.limits.max_bytes} bytes "
                            "(VITRINE_MAX_IMAGE_BYTES)"
                        )
                    chunks.append(chunk)
                return 200, None, b"".join(chunks)
        except AddressRefused as exc:
            # The resolved address and the resolver's error stay in the log: a caller must not be
            # able to map internal names and networks through these answers.
            log.info("URL refused: %s (%s)", _short(url), exc)
            host = urlsplit(url).hostname or "the host"
            raise BadInput(
                f"URL refused: {host} does not resolve to a public address "
                "(an operator can allow private hosts with VITRINE_URL_ALLOW_HOSTS)"
            ) from None
        except httpcore.TimeoutException:
            deadline = _DEADLINE.get()
            if deadline is not None and time.monotonic() >= deadline:
                raise BadInput(
                    f"fetching {_short(url)} timed out: not done within {self.limits.total_timeout:g} s "
                    "(VITRINE_FETCH_TOTAL_TIMEOUT)"
                ) from None
            raise BadInput(f"fetching {_short(url)} timed out") from None
        except (httpcore.ProtocolError, httpcore.NetworkError, httpcore.UnsupportedProtocol) as exc:
            log.info("fetching %s failed: %r", _short(url), exc)
            raise BadInput(f"fetching {_short(url)} failed: {_generic_failure(exc)}") from None


def _generic_failure(exc: Exception) -> str:
    """What a caller is told about a failed connection: the kind of failure, never an errno or address."""
    if isinstance(exc, httpcore.ConnectError):
        return "could not connect"
    if isinstance(exc, httpcore.UnsupportedProtocol):
        return "unsupported protocol"
    if isinstance(exc, httpcore.ProtocolError):
        return "the origin did not answer with valid HTTP"
    return "the connection failed"


def _prepare_url(url: str) -> str:
    """The URL to request: http(s) with a host, in ASCII. Raises BadInput for anything else.

    Catalog URLs often carry non-ASCII paths or international host names, which HTTP cannot send as
    they are: like a browser, the host becomes IDNA and other non-ASCII characters and spaces are
    percent-encoded.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError when the port is not a number in 0-65535
    except ValueError:
        raise BadInput(f"URL refused: not a valid URL: {_short(url)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"URL refused: only http and https URLs with a host are fetched, not {_short(url)}")
    if url.isascii() and not any(char.isspace() for char in url):
        return url
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not hostport.isascii():
        name, colon, port = hostport.partition(":")
        try:
            hostport = name.encode("idna").decode("ascii") + colon + port
        except UnicodeError:
            raise BadInput(f"URL refused: not a valid host name: {_short(url)}") from None

    def encode(part: str) -> str:
        return quote(part, safe=string.punctuation)

    netloc = encode(userinfo) + at + hostport
    return urlunsplit((parts.scheme, netloc, encode(parts.path), encode(parts.query), encode(parts.fragment)))


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _short(url: str, limit: int = 120) -> str:
    return url if len(url) <= limit else url[:limit] + "..."

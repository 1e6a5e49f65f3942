"""Fetching image URLs on a caller's behalf, guarded against server-side request forgery.

The address check lives in the network backend, at connect time: the address that is checked is the
address the socket connects to, so DNS rebinding between a check and the connect cannot slip through,
and every redirect hop opens its connection through the same check.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import string
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import httpcore

from search.errors import BadInput, TooLarge

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_REDIRECTS = {301, 302, 303, 307, 308}
# NAT64 prefixes map an IPv4 address into IPv6; the embedded address is what is really reached.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class AddressRefused(Exception):
    """A URL resolved to an address the guard does not allow."""


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_kind(ip: IPAddress) -> str | None:
    """Why an address is not public ("loopback", "private", ...), or None when it is public."""
    inner = _embedded_ipv4(ip)
    if inner is not None:
        return address_kind(inner)
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    if not ip.is_global:
        return "non-global"
    return None


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
        if any(ip in net or (_embedded_ipv4(ip) or ip) in net for net in self.allowed_networks):
            return
        kind = address_kind(ip)
        if kind is not None:
            raise AddressRefused(
                f"{host} resolves to {kind} address {ip}; add the host or address to "
                "VITRINE_URL_ALLOW_HOSTS to allow it"
            )


class GuardedBackend(httpcore.NetworkBackend):
    """Resolves the host itself, refuses disallowed addresses, and connects to the checked address."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # UnicodeError: the idna codec refuses the name
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        for ip in addresses:
            self._policy.check(host, ip)  # every address, so a mixed answer cannot be exploited
        last_error: Exception | None = None
        for ip in addresses:
            try:
                return self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        raise last_error or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(self, *args: object, **kwargs: object) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


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

    def __post_init__(self) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(),
            max_connections=64,
            network_backend=GuardedBackend(self.policy),
        )

    def close(self) -> None:
        self._pool.close()

    def fetch(self, url: str) -> bytes:
        """The body of ``url``. Raises BadInput (refused, unreachable, HTTP error) or TooLarge."""
        deadline = time.monotonic() + self.limits.total_timeout
        for _hop in range(self.limits.max_redirects + 1):
            url = _prepare_url(url)
            status, location, body = self._get_once(url, deadline)
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

    def _get_once(self, url: str, deadline: float) -> tuple[int, str | None, bytes]:
        timeouts = {
            "connect": self.limits.connect_timeout,
            "read": self.limits.read_timeout,
            "write": self.limits.read_timeout,
            "pool": self.limits.connect_timeout,
        }
        headers = [(b"User-Agent", self.user_agent.encode()), (b"Accept", b"image/*")]
        try:
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
                    if time.monotonic() > deadline:
                        raise BadInput(
                            f"fetching {_short(url)} took longer than {self.limits.total_timeout} s"
                        )
                    chunks.append(chunk)
                return 200, None, b"".join(chunks)
        except AddressRefused as exc:
            raise BadInput(f"URL refused: {exc}") from None
        except httpcore.TimeoutException:
            raise BadInput(f"fetching {_short(url)} timed out") from None
        except (httpcore.ProtocolError, httpcore.NetworkError, httpcore.UnsupportedProtocol) as exc:
            raise BadInput(f"fetching {_short(url)} failed: {exc or type(exc).__name__}") from None


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

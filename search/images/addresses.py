"""Which IP addresses count as public: the full IANA special-purpose registries, IPv4 and IPv6.

Python's ``ipaddress`` flags are a partial and version-dependent view (on 3.11, ``192.0.0.8`` and the
deprecated site-local ``fec0::/10`` are "global"), so the registries are spelled out here. Every entry
is refused, including the few the registry marks globally reachable (anycast services, AS112): no
product image is served from them, and a short, complete list is easier to trust than a clever one.
IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4, Teredo) are judged by that address.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_net = ipaddress.ip_network

# https://www.iana.org/assignments/iana-ipv4-special-registry (plus multicast and limited broadcast)
SPECIAL_IPV4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_net("0.0.0.0/8"), "this-network"),
    (_net("10.0.0.0/8"), "private"),
    (_net("100.64.0.0/10"), "shared (carrier-grade NAT)"),
    (_net("127.0.0.0/8"), "loopback"),
    (_net("169.254.0.0/16"), "link-local"),
    (_net("172.16.0.0/12"), "private"),
    (_net("192.0.0.0/24"), "IETF protocol assignments"),
    (_net("192.0.2.0/24"), "documentation"),
    (_net("192.31.196.0/24"), "AS112"),
    (_net("192.52.193.0/24"), "AMT"),
    (_net("192.88.99.0/24"), "6to4 relay anycast"),
    (_net("192.168.0.0/16"), "private"),
    (_net("192.175.48.0/24"), "AS112 direct delegation"),
    (_net("198.18.0.0/15"), "benchmarking"),
    (_net("198.51.100.0/24"), "documentation"),
    (_net("203.0.113.0/24"), "documentation"),
    (_net("224.0.0.0/4"), "multicast"),
    (_net("240.0.0.0/4"), "reserved"),
)

# https://www.iana.org/assignments/iana-ipv6-special-registry (plus multicast and reserved blocks).
# The IPv4-embedding prefixes (::ffff:0:0/96, 64:ff9b::/96, 2002::/16) are judged by their IPv4 address.
SPECIAL_IPV6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_net("::/128"), "unspecified"),
    (_net("::1/128"), "loopback"),
    (_net("::/96"), "IPv4-compatible (deprecated)"),
    (_net("::ffff:0:0:0/96"), "IPv4-translated"),
    (_net("64:ff9b:1::/48"), "local-use NAT64"),
    (_net("100::/64"), "discard-only"),
    (_net("100:0:0:1::/64"), "dummy prefix"),
    (_net("2001::/23"), "IETF protocol assignments (Teredo, benchmarking, ORCHID, ...)"),
    (_net("2001:db8::/32"), "documentation"),
    (_net("2620:4f:8000::/48"), "AS112 direct delegation"),
    (_net("3fff::/20"), "documentation"),
    (_net("5f00::/16"), "segment routing"),
    (_net("fc00::/7"), "unique-local"),
    (_net("fe80::/10"), "link-local"),
    (_net("fec0::/10"), "site-local (deprecated)"),
    (_net("ff00::/8"), "multicast"),
    (_net("::/8"), "reserved"),
)

# NAT64 well-known prefix: the embedded IPv4 address is what is really reached.
_NAT64 = _net("64:ff9b::/96")


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def address_kind(ip: IPAddress) -> str | None:
    """Why an address is not public ("loopback", "documentation", ...), or None when it is public."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        kind = address_kind(inner)
        # Teredo (2001::/32) stays refused whatever it embeds: a tunnel relay is no image host.
        if kind is not None or ip.teredo is None:
            return kind
    registry = SPECIAL_IPV4 if isinstance(ip, ipaddress.IPv4Address) else SPECIAL_IPV6
    for network, kind in registry:
        if ip in network:
            return kind
    # A backstop for anything the registries above do not list (a future Python may know more).
    if not ip.is_global or ip.is_reserved or ip.is_multicast:
        return "non-global"
    return None

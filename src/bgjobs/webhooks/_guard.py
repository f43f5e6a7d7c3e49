"""The SSRF guard: endpoint URLs may only reach public addresses, and only the address checked.

A subscriber chooses the URL, so without a guard a webhook is a way to make the worker
POST to its own network (cloud metadata at 169.254.169.254, an admin port on 127.0.0.1).
The host is resolved here, every address it resolves to is checked, and the request is
then sent to the checked address itself (the name goes in ``Host`` and TLS SNI), so a
second DNS answer cannot swap in a private address between the check and the connection.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import BlockedAddress, TransientError

__all__ = ["BLOCKED_NETWORKS", "BlockedAddress", "Target", "check_url", "resolve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Ranges no endpoint may reach, with the name the error gives.
BLOCKED_NETWORKS: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(cidr), name)
    for cidr, name in (
        ("0.0.0.0/8", "'this network'"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("255.255.255.255/32", "broadcast"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("2001:db8::/32", "documentation"),
        # RFC 8215: NAT64 inside one operator's network, whatever prefix length it embeds with.
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


@dataclass(frozen=True)
class Target:
    """Where one request goes: the checked address, and the name for ``Host`` and SNI."""

    scheme: str
    host: str
    port: int
    address: str
    path: str

    @property
    def url(self) -> str:
        """The URL with the checked address in place of the name."""
        literal = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{literal}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def _embedded_v4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 one carries: IPv4-mapped ``::ffff:a.b.c.d``, IPv4-translated
    ``::ffff:0:a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``, IPv4-compatible, 6to4, and Teredo (its server
    and its client); a packet to any of them may end up at that IPv4 address."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    if ip in _NAT64 or ip in _TRANSLATED or (ip in _COMPATIBLE and int(ip) > 1):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []


def blocked_range(ip: IPAddress) -> str | None:
    """The name of the blocked range ``ip`` falls in, or None for a public address."""
    for inner in _embedded_v4(ip):
        found = blocked_range(inner)
        if found:
            return f"{found} (as {ip})"
    for network, name in BLOCKED_NETWORKS:
        if ip.version == network.version and ip in network:
            return name
    if not ip.is_global:
        return "non-public"
    return None


def _allowed(host: str, ip: IPAddress, allow: list[str]) -> bool:
    for entry in allow:
        if entry.lower() == host.lower():
            return True
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if ip.version == network.version and ip in network:
            return True
    return False


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (a literal address resolves to itself).

    Raises:
        TransientError: the name does not resolve now (DNS can recover).
    """
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TransientError(f"cannot resolve {host}: {exc}") from None
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    return found


def check_url(url: str, *, require_https: bool, allow: list[str]) -> Target:
    """Resolve and check ``url``; returns the address to connect to.

    Raises:
        BlockedAddress: a malformed URL, plain HTTP where HTTPS is required, or an address in a
            blocked range (every resolved address must pass).
        TransientError: the host does not resolve.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlockedAddress(f"url: {url!r} is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise BlockedAddress("url: credentials in the URL are not allowed; use the signing secret")
    if require_https and parts.scheme != "https":
        raise BlockedAddress(f"url: {url!r} must use https (BGJOBS_WEBHOOKS__REQUIRE_HTTPS)")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BlockedAddress(f"url: {url!r} has an invalid port") from None
    addresses = resolve(host, port)
    if not addresses:
        raise TransientError(f"{host} resolves to no address")
    for ip in addresses:
        reason = blocked_range(ip)
        if reason is not None and not _allowed(host, ip, allow):
            shown = host if host == str(ip) else f"{host} ({ip})"
            raise BlockedAddress(
                f"url: {shown} is a {reason} address; webhooks only go to public addresses "
                "(BGJOBS_WEBHOOKS__ALLOW lists exceptions)"
            )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(parts.scheme, host, port, str(addresses[0]), path)

"""Where a webhook may point: plain Python, no Django.

A webhook URL is chosen by a user and fetched by our servers, so it must not reach what only our
servers can reach: loopback, private and link-local networks, multicast, reserved ranges, or a
cloud's metadata service. The rules apply to every address the host name resolves to, when the
webhook is created and again before each delivery (DNS may have changed in between); the delivery
then connects to the address that was checked, never resolving the name a second time
(webhooks.sending). An administrator may allow named hosts outright (WEBHOOK_ALLOWED_HOSTS).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

URL_MAX_LENGTH = 2000
SCHEMES = {"http": 80, "https": 443}

# Metadata services answer on these addresses with the machine's cloud credentials. Most are
# link-local or private anyway; Azure's wire server is a public address.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task credentials
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
METADATA_HOST_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64): judged by that address.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


class UnsafeURL(ValueError):
    """The URL may not be used for a webhook; the message says why."""


@dataclass(frozen=True)
class Target:
    """Where one delivery goes: the checked address to connect to, and the names to present."""

    scheme: str
    host: str  # the URL's host as ASCII (IDNA), no brackets: for TLS (SNI and the certificate)
    port: int
    address: str  # the resolved, checked IP address the connection goes to
    host_header: str
    path: str  # path and query


def address_problem(ip: IPAddress) -> str | None:
    """Why an address is out of bounds for webhooks (e.g. "a private address"), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (_nat64_embedded(ip) if ip in NAT64 else None)
        if embedded is not None:
            problem = address_problem(embedded)
            return f"{problem} (inside the IPv6 address)" if problem else None
        if ip in LOCAL_NAT64:
            return "a private address"
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata service address"
    for problem, matches in (
        ("a loopback address", ip.is_loopback),
        ("an unspecified address", ip.is_unspecified),
        ("a link-local address", ip.is_link_local),
        ("a multicast address", ip.is_multicast),
        ("a reserved address", ip.is_reserved),
        ("a private address", ip.is_private),
        ("not a public address", not ip.is_global),
    ):
        if matches:
            return problem
    return None


def _nat64_embedded(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def system_resolve(host: str, port: int) -> list[str]:
    """Every address the host name resolves to (IPv4 and IPv6), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def webhook_target(url: str, *, allowed_hosts: Collection[str], resolve: Resolver = system_resolve) -> Target:
    """Check `url` and resolve it to the one address a delivery will connect to.

    Raises UnsafeURL naming the reason: not http(s), no host, credentials in the URL, a host that
    does not resolve, or any of its addresses out of bounds (address_problem). Hosts listed in
    `allowed_hosts` skip the address rules (an administrator's decision, e.g. an internal receiver).
    """
    scheme, host, port, path, host_header = _url_parts(url)
    allowed = host in {name.strip().strip("[]").lower() for name in allowed_hosts}
    if not allowed and host in METADATA_HOST_NAMES:
        raise UnsafeURL(f"{host} is a cloud metadata service")
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise UnsafeURL(f"the host name {host} does not resolve ({exc})") from exc
        if not addresses:
            raise UnsafeURL(f"the host name {host} does not resolve")
    if not allowed:
        for address in addresses:
            problem = address_problem(ipaddress.ip_address(address.split("%", 1)[0]))
            if problem:
                where = host if literal is not None else f"{host} resolves to {address}, which"
                raise UnsafeURL(f"{where} is {problem}; webhooks go to public addresses only")
    return Target(scheme, host, port, addresses[0], host_header, path)


def _url_parts(url: str) -> tuple[str, str, int, str, str]:
    if len(url) > URL_MAX_LENGTH:
        raise UnsafeURL(f"the URL is longer than {URL_MAX_LENGTH} characters")
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        raise UnsafeURL("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UnsafeURL("only http and https URLs are allowed")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("credentials in the URL are not allowed: receivers check the signature instead")
    if not parts.hostname:
        raise UnsafeURL("the URL has no host")
    try:
        host = parts.hostname.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise UnsafeURL(f"the host name is not valid ({exc})") from exc
    port = port or SCHEMES[scheme]
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == SCHEMES[scheme] else f"{shown}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port, path, host_header


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None

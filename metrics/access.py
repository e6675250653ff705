"""Who may read /metrics: a bearer token (METRICS_TOKEN), client networks (METRICS_ALLOWED_NETWORKS), or both.

Neither set: /metrics answers 404, as if it did not exist; nothing is open by default. With both
set, a scrape must come from an allowed network and carry the token. The token travels only in the
Authorization header, never in the URL, which access logs keep.
"""

from __future__ import annotations

import hmac
import ipaddress
from enum import Enum

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refusal(Enum):
    NOT_CONFIGURED = 404
    NETWORK = 403
    TOKEN = 401


def allowed_networks(entries: list[str]) -> list[Network]:
    """The configured networks; raises ValueError naming the first entry that is none (the system check says it)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or network: {exc}") from None
    return networks


def _from_allowed_network(remote_addr: str, networks: list[Network]) -> bool:
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _carries_token(authorization: str, token: str) -> bool:
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def scrape_refusal(*, remote_addr: str, authorization: str) -> Refusal | None:
    """Why a scrape from `remote_addr` with this Authorization header is refused; None: it is not."""
    token: str = settings.METRICS_TOKEN
    entries: list[str] = settings.METRICS_ALLOWED_NETWORKS
    if not token and not entries:
        return Refusal.NOT_CONFIGURED
    if entries:
        try:
            networks = allowed_networks(entries)
        except ValueError:
            return Refusal.NETWORK  # the system check reports the bad entry; refuse meanwhile
        if not _from_allowed_network(remote_addr, networks):
            return Refusal.NETWORK
    if token and not _carries_token(authorization, token):
        return Refusal.TOKEN
    return None


def metrics_refusal(request: HttpRequest) -> Refusal | None:
    return scrape_refusal(
        remote_addr=request.META.get("REMOTE_ADDR", ""), authorization=request.headers.get("Authorization", "")
    )

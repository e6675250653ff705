"""Webhook URLs reach public addresses only: every address class our servers alone can reach is
refused, as a literal and through DNS, at creation (400 with the reason) and again at delivery."""

from __future__ import annotations

import pytest

from webhooks.addresses import UnsafeURL, webhook_target

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def resolver(*addresses: str):
    def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"an IP literal needs no DNS lookup ({host})")


@pytest.mark.parametrize(
    "address,reason",
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.20", "private"),
        ("169.254.10.10", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("168.63.129.16", "cloud metadata"),
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not a public address"),  # shared address space (carrier-grade NAT)
        ("192.0.2.10", "private"),  # documentation range
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd00:ec2::254", "cloud metadata"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:c0a8:0101::1", "private"),  # 6to4 of 192.168.1.1
    ],
)
def test_each_address_class_is_refused_as_a_literal(address, reason):
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeURL, match=reason):
        webhook_target(f"http://{host}:8080/hook", allowed_hosts=[], resolve=no_dns)


@pytest.mark.parametrize("address,reason", [("10.0.0.7", "private"), ("fd12::7", "private"), ("::1", "loopback")])
def test_a_name_that_resolves_to_a_private_address_is_refused(address, reason):
    with pytest.raises(UnsafeURL, match=f"hooks.example.com resolves to {address}, which is .*{reason}"):
        webhook_target("https://hooks.example.com/x", allowed_hosts=[], resolve=resolver(address))


def test_one_private_address_among_public_ones_is_enough_to_refuse():
    with pytest.raises(UnsafeURL, match=r"resolves to 10\.9\.9\.9, which is a private address"):
        webhook_target("https://hooks.example.com/x", allowed_hosts=[], resolve=resolver(PUBLIC_V4, "10.9.9.9"))


def test_a_public_name_resolves_to_the_address_the_delivery_connects_to():
    target = webhook_target(
        "https://Hooks.Example.com/in/anime?team=7", allowed_hosts=[], resolve=resolver(PUBLIC_V6, PUBLIC_V4)
    )
    assert (target.scheme, target.host, target.port, target.address) == ("https", "hooks.example.com", 443, PUBLIC_V6)
    assert target.host_header == "hooks.example.com" and target.path == "/in/anime?team=7"


def test_a_public_ipv6_literal_keeps_its_brackets_in_the_host_header():
    target = webhook_target(f"http://[{PUBLIC_V6}]:8080/", allowed_hosts=[], resolve=no_dns)
    assert target.address == PUBLIC_V6 and target.host_header == f"[{PUBLIC_V6}]:8080"


def test_an_allowed_host_may_be_loopback():
    target = webhook_target("http://127.0.0.1:9000/hook", allowed_hosts=["127.0.0.1"], resolve=no_dns)
    assert target.address == "127.0.0.1" and target.host_header == "127.0.0.1:9000"
    named = webhook_target(
        "http://receiver.internal/h", allowed_hosts=["Receiver.Internal"], resolve=resolver("10.0.0.5")
    )
    assert named.address == "10.0.0.5"


@pytest.mark.parametrize(
    "url,reason",
    [
        ("ftp://hooks.example.com/x", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://hooks.example.com/", "only http and https"),
        ("https://user:pw@hooks.example.com/", "credentials"),
        ("https:///nohost", "no host"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https://hooks.example.com/a b", "spaces or control characters"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
        ("https://hooks.example.com/" + "a" * 2000, "longer than 2000"),
    ],
)
def test_urls_that_are_not_plain_http_to_a_host_are_refused(url, reason):
    with pytest.raises(UnsafeURL, match=reason):
        webhook_target(url, allowed_hosts=[], resolve=resolver(PUBLIC_V4))


def test_a_name_that_does_not_resolve_is_refused():
    def fails(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(UnsafeURL, match="does not resolve"):
        webhook_target("https://nowhere.example.com/", allowed_hosts=[], resolve=fails)

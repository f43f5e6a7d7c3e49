"""Signatures against the reference ``standardwebhooks`` package, and the SSRF guard's ranges."""

from __future__ import annotations

import base64
import ipaddress
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from bgjobs.errors import TransientError
from bgjobs.settings import load_settings
from bgjobs.webhooks import InvalidSignature, generate_secret, verify
from bgjobs.webhooks._guard import BlockedAddress, check_url
from bgjobs.webhooks._signing import sign
from bgjobs.webhooks._transport import retry_after

BODY = b'{"type":"payment.succeeded","timestamp":"2025-06-01T00:00:00.000Z","data":{"amount":"10.00"}}'


def headers(secrets: list[str], *, message_id: str = "msg_1", at: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if at is None else at
    return {"webhook-id": message_id, "webhook-timestamp": str(stamp),
            "webhook-signature": sign(message_id, stamp, BODY, secrets)}  # fmt: skip


def test_generated_secrets_are_whsec_and_32_random_bytes() -> None:
    a, b = generate_secret(), generate_secret()
    assert a.startswith("whsec_") and a != b
    assert len(base64.b64decode(a.removeprefix("whsec_"))) == 32


def test_the_reference_verifier_accepts_our_signatures_and_we_accept_its() -> None:
    secret = generate_secret()
    h = headers([secret])
    # Given our signature, the reference package verifies it
    assert Webhook(secret).verify(BODY, h)["data"] == {"amount": "10.00"}
    # and a signature made by the reference package verifies with ours
    now = datetime.now(UTC)
    theirs = Webhook(secret).sign("msg_2", now, BODY.decode())
    their_headers = {"Webhook-Id": "msg_2", "Webhook-Timestamp": str(int(now.timestamp())),
                     "Webhook-Signature": theirs}  # fmt: skip
    assert verify(BODY, their_headers, secret)["type"] == "payment.succeeded"


def test_two_secrets_give_two_signatures_and_either_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    h = headers([new, old])
    assert len(h["webhook-signature"].split(" ")) == 2
    assert verify(BODY, h, old) == verify(BODY, h, new)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("body", "no signature matches"),
        ("secret", "no signature matches"),
        ("id", "no signature matches"),
        ("stale", "more than 300 s from now"),
        ("missing", "missing webhook-id"),
    ],
)
def test_verify_rejects_anything_altered(change: str, message: str) -> None:
    secret = generate_secret()
    h = headers([secret], at=int(time.time()) - 301 if change == "stale" else None)
    body = BODY
    if change == "body":
        body = BODY.replace(b"10.00", b"99.00")
    elif change == "id":
        h["webhook-id"] = "msg_other"
    elif change == "missing":
        del h["webhook-signature"]
    with pytest.raises(InvalidSignature, match=message):
        verify(body, h, generate_secret() if change == "secret" else secret)


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0", "10.1.2.3", "100.64.0.1", "127.0.0.1", "169.254.169.254", "172.16.5.4",
        "192.168.1.1", "192.0.2.10", "198.51.100.7", "203.0.113.9", "224.0.0.1", "240.0.0.1",
        "255.255.255.255", "[::1]", "[::]", "[fc00::1]", "[fd12:3456::1]", "[fe80::1]", "[ff02::1]",
        "[2001:db8::1]", "[::ffff:127.0.0.1]", "[::ffff:10.0.0.1]", "[::ffff:169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]", "[2002:7f00:1::]",
    ],
)  # fmt: skip
def test_every_blocked_range_is_refused(address: str) -> None:
    with pytest.raises(BlockedAddress, match="webhooks only go to public addresses"):
        check_url(f"https://{address}/hook", require_https=True, allow=[])


def test_a_hostname_resolving_to_a_blocked_address_is_refused() -> None:
    with pytest.raises(BlockedAddress, match=r"localhost \((127\.0\.0\.1|::1)\) is a loopback address"):
        check_url("https://localhost:8443/hook", require_https=True, allow=[])


def test_a_public_address_passes_and_the_request_is_pinned_to_it() -> None:
    target = check_url("https://93.184.215.14:8443/in?x=1", require_https=True, allow=[])
    assert target.url == "https://93.184.215.14:8443/in?x=1"
    assert (target.host_header, target.address) == ("93.184.215.14:8443", "93.184.215.14")


def test_https_is_required_unless_turned_off_and_the_allow_list_admits_hosts_and_cidrs() -> None:
    with pytest.raises(BlockedAddress, match="must use https"):
        check_url("http://93.184.215.14/in", require_https=True, allow=[])
    assert (
        check_url("http://127.0.0.1:9/in", require_https=False, allow=["127.0.0.0/8"]).address == "127.0.0.1"
    )
    pinned = check_url("http://localhost:9/in", require_https=False, allow=["localhost"])
    assert pinned.address in ("127.0.0.1", "::1")
    assert pinned.host_header == "localhost:9"
    with pytest.raises(BlockedAddress, match="credentials in the URL"):
        check_url("https://user:pw@93.184.215.14/in", require_https=True, allow=[])
    with pytest.raises(BlockedAddress, match="not an http"):
        check_url("ftp://93.184.215.14/in", require_https=True, allow=[])


def test_a_name_that_does_not_resolve_is_transient() -> None:
    with pytest.raises(TransientError, match="cannot resolve"):
        check_url("https://no-such-host.invalid/in", require_https=True, allow=[])


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert retry_after("120") == 120.0
    assert retry_after("Sun, 01 Jun 2025 12:00:30 GMT", now) == 30.0
    assert retry_after((now - timedelta(seconds=5)).strftime("%a, %d %b %Y %H:%M:%S GMT"), now) == 0.0
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_the_seeds_retry_policy_is_expressible_in_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # "Up to 5 times with exponential backoff; timeout 30 seconds"
    monkeypatch.setenv("BGJOBS_WEBHOOKS__RETRY_SCHEDULE_S", "[30, 60, 120, 240, 480]")
    monkeypatch.setenv("BGJOBS_WEBHOOKS__TIMEOUT_S", "30")
    webhooks = load_settings().webhooks
    assert webhooks.retry_schedule_s == [30, 60, 120, 240, 480]
    assert webhooks.timeout_s == 30
    # and the default is eight attempts: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
    monkeypatch.delenv("BGJOBS_WEBHOOKS__RETRY_SCHEDULE_S")
    assert load_settings().webhooks.retry_schedule_s == [5, 300, 1800, 7200, 18000, 36000, 36000]


def _teredo(server: str, client: str) -> str:
    """A Teredo address: 2001:0::/32, the server's IPv4, then the client's IPv4 inverted."""
    s, c = int(ipaddress.IPv4Address(server)), int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (s << 64) | c))


@pytest.mark.parametrize(
    ("form", "address", "embedded"),
    [
        ("IPv4-mapped", "::ffff:7f00:1", "loopback"),
        ("IPv4-translated", "::ffff:0:7f00:1", "loopback"),
        ("IPv4-translated", "::ffff:0:a9fe:a9fe", "link-local"),
        ("NAT64 well-known", "64:ff9b::7f00:1", "loopback"),
        ("NAT64 well-known", "64:ff9b::a00:1", "private"),
        ("NAT64 local-use", "64:ff9b:1::7f00:1", None),
        ("NAT64 local-use", "64:ff9b:1:ffff::5db8:d70e", None),
        ("IPv4-compatible", "::7f00:1", "loopback"),
        ("6to4", "2002:7f00:1::1", "loopback"),
        ("6to4", "2002:a9fe:a9fe::", "link-local"),
        ("Teredo client", _teredo("93.184.215.14", "127.0.0.1"), "loopback"),
        ("Teredo server", _teredo("10.0.0.1", "93.184.215.14"), "private"),
    ],
)  # fmt: skip
def test_every_ipv6_form_that_embeds_a_blocked_ipv4_address_is_refused(
    form: str, address: str, embedded: str | None
) -> None:
    # local-use NAT64 embeds at a prefix length only its operator knows: the whole range is refused
    reason = rf"is a {embedded} \(as " if embedded else "is a local-use NAT64 address"
    with pytest.raises(BlockedAddress, match=reason):
        check_url(f"https://[{address}]/hook", require_https=True, allow=[])


@pytest.mark.parametrize("address", ["::ffff:5db8:d70e", "64:ff9b::5db8:d70e", "2002:5db8:d70e::1"])
def test_an_ipv6_form_of_a_public_ipv4_address_passes(address: str) -> None:
    assert check_url(f"https://[{address}]/hook", require_https=True, allow=[]).address == address

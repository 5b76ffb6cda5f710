"""
Tests for L{quayd.webhooks.targets}: webhook URL checks, address checks after
DNS resolution, and the guarded endpoint factory that connects only to an
address it checked.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.client import URI

from quayd.blocking import run_synchronously
from quayd.webhooks.targets import (
    GuardedEndpointFactory,
    TargetPolicy,
    TargetRefused,
    check_address,
    check_url,
)
from tests.support.twisted import assert_no_result, failure_result_of

P = ParamSpec("P")
T = TypeVar("T")

#: One C{getaddrinfo} answer entry.
AddrInfo = tuple[Any, ...]

# check_url


@pytest.mark.parametrize(
    "url",
    [
        "http://hook.example/push",
        "https://hook.example:8443/push?token=abc",
        "HTTPS://HOOK.EXAMPLE/",
        "http://192.0.2.10:8080/",
        "http://[2001:db8::1]:8080/hook",
    ],
)
def test_check_url_accepts_http_and_https(url: str) -> None:
    """An http or https URL with a host and no credentials is returned unchanged."""
    assert check_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hook.example/push",
        "file:///etc/passwd",
        "gopher://hook.example/",
        "javascript:alert(1)",
        "ws://hook.example/",
        "hook.example/push",
        "//hook.example/push",
    ],
)
def test_check_url_refuses_other_schemes(url: str) -> None:
    """Only http and https are allowed."""
    with pytest.raises(TargetRefused, match="http or https"):
        check_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://user:secret@hook.example/", "https://user@hook.example/", "http://:secret@hook.example/"],
)
def test_check_url_refuses_credentials(url: str) -> None:
    """Credentials in the URL are refused (they would be logged and shown)."""
    with pytest.raises(TargetRefused, match="credentials"):
        check_url(url)


@pytest.mark.parametrize("url", ["http://", "https:///path", "http://:8080/"])
def test_check_url_refuses_missing_host(url: str) -> None:
    """A URL without a host is refused."""
    with pytest.raises(TargetRefused, match="no host"):
        check_url(url)


@pytest.mark.parametrize("url", ["http://hook.example:0/", "http://hook.example:65536/", "http://h:x/"])
def test_check_url_refuses_bad_port(url: str) -> None:
    """Port 0 and ports that do not parse are refused."""
    with pytest.raises(TargetRefused):
        check_url(url)


def test_check_url_refuses_long_url() -> None:
    """URLs over 2048 characters are refused."""
    with pytest.raises(TargetRefused, match="too long"):
        check_url("https://hook.example/" + "a" * 2048)


# check_address

REFUSED_ALWAYS = [
    "169.254.169.254",
    "169.254.0.1",
    "fe80::1",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "255.255.255.255",
    "240.0.0.1",
    "100.100.100.200",
    "fd00:ec2::254",
    "::ffff:169.254.169.254",
]
PRIVATE = [
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.254",
    "fc00::1",
    "fd12:3456::1",
    "::ffff:10.0.0.1",
]
LOOPBACK = ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", LOOPBACK)
def test_check_address_refuses_loopback(address: str) -> None:
    """Loopback addresses (IPv4, IPv6, IPv4-mapped) are refused by default."""
    with pytest.raises(TargetRefused, match="loopback"):
        check_address(address, TargetPolicy())


@pytest.mark.parametrize("address", LOOPBACK)
def test_check_address_allow_loopback(address: str) -> None:
    """C{allow_loopback} lets loopback addresses through."""
    check_address(address, TargetPolicy(allow_loopback=True))


@pytest.mark.parametrize("address", PRIVATE)
def test_check_address_refuses_private(address: str) -> None:
    """RFC 1918, CGNAT (100.64/10) and unique-local IPv6 addresses are refused by default."""
    with pytest.raises(TargetRefused, match="private"):
        check_address(address, TargetPolicy())


@pytest.mark.parametrize("address", PRIVATE)
def test_check_address_allow_private(address: str) -> None:
    """C{allow_private} lets private addresses through."""
    check_address(address, TargetPolicy(allow_private=True))


@pytest.mark.parametrize("address", REFUSED_ALWAYS)
def test_check_address_refuses_link_local_metadata_multicast_unspecified(address: str) -> None:
    """Link-local (metadata), multicast, unspecified and broadcast stay refused under the loosest policy."""
    with pytest.raises(TargetRefused):
        check_address(address, TargetPolicy(allow_loopback=True, allow_private=True))


def test_check_address_refuses_metadata_with_reason() -> None:
    """The cloud metadata address is refused as link-local."""
    with pytest.raises(TargetRefused, match="link-local"):
        check_address("169.254.169.254", TargetPolicy())


def test_check_address_refuses_loopback_when_only_private_allowed() -> None:
    """C{allow_private} does not open loopback."""
    with pytest.raises(TargetRefused, match="loopback"):
        check_address("127.0.0.1", TargetPolicy(allow_private=True))


@pytest.mark.parametrize("address", PUBLIC)
def test_check_address_allows_public(address: str) -> None:
    """Public unicast addresses are allowed by the default policy."""
    check_address(address, TargetPolicy())


# GuardedEndpointFactory


class _Resolver:
    """
    A L{quayd.blocking.BlockingRunner} standing in for C{getaddrinfo}: any
    call answers with the given addresses, in order.
    """

    def __init__(self, *addresses: str) -> None:
        self._addresses = addresses

    def __call__(self, f: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        """Answer a C{getaddrinfo(host, port, ...)} call."""
        assert f is socket.getaddrinfo
        port = args[1]
        infos: list[AddrInfo] = []
        for address in self._addresses:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return succeed(cast(T, infos))


def _uri(url: str) -> URI:
    """Parse C{url} as the C{Agent} does."""
    uri: URI = URI.fromBytes(url.encode("ascii"))
    return uri


def test_guarded_endpoint_localhost_refused() -> None:
    """C{localhost} resolves to loopback, so the connection fails with L{TargetRefused} and none is opened."""
    reactor = MemoryReactorClock()
    factory = GuardedEndpointFactory(reactor, run_synchronously, TargetPolicy(allow_loopback=False), 5)
    endpoint = factory.endpointForURI(_uri("http://localhost:8080/hook"))
    failure = failure_result_of(endpoint.connect(Factory.forProtocol(Protocol)), TargetRefused)
    assert "loopback" in failure.getErrorMessage()
    assert reactor.tcpClients == []


def test_guarded_endpoint_refuses_if_any_address_refused() -> None:
    """A DNS answer mixing public and private addresses is refused as a whole (no rebinding)."""
    reactor = MemoryReactorClock()
    factory = GuardedEndpointFactory(reactor, _Resolver("93.184.216.34", "10.0.0.7"), TargetPolicy(), 5)
    endpoint = factory.endpointForURI(_uri("http://hook.example/"))
    failure_result_of(endpoint.connect(Factory.forProtocol(Protocol)), TargetRefused)
    assert reactor.tcpClients == []


def test_guarded_endpoint_refuses_empty_answer() -> None:
    """A name that resolves to nothing is refused."""
    reactor = MemoryReactorClock()
    factory = GuardedEndpointFactory(reactor, _Resolver(), TargetPolicy(), 5)
    endpoint = factory.endpointForURI(_uri("http://hook.example/"))
    failure_result_of(endpoint.connect(Factory.forProtocol(Protocol)), TargetRefused)
    assert reactor.tcpClients == []


def test_guarded_endpoint_connects_to_checked_address() -> None:
    """The connection goes to the resolved address that was checked, on the URI's port, with the timeout."""
    reactor = MemoryReactorClock()
    factory = GuardedEndpointFactory(reactor, _Resolver("93.184.216.34"), TargetPolicy(), 7)
    endpoint = factory.endpointForURI(_uri("http://hook.example:8080/push"))
    assert_no_result(endpoint.connect(Factory.forProtocol(Protocol)))
    [(host, port, _factory, timeout, _bind)] = reactor.tcpClients
    assert (host, port, timeout) == ("93.184.216.34", 8080, 7)


def test_guarded_endpoint_ipv6_address() -> None:
    """An IPv6 answer is connected to as IPv6."""
    reactor = MemoryReactorClock()
    factory = GuardedEndpointFactory(reactor, _Resolver("2606:4700:4700::1111"), TargetPolicy(), 5)
    endpoint = factory.endpointForURI(_uri("https://hook.example/push"))
    assert_no_result(endpoint.connect(Factory.forProtocol(Protocol)))
    [(host, port, _factory, _timeout, _bind)] = reactor.tcpClients
    assert (host, port) == ("2606:4700:4700::1111", 443)


def test_guarded_endpoint_ip_literal_checked() -> None:
    """An IP literal in the URL is checked like a resolved name."""
    reactor = MemoryReactorClock()
    factory = GuardedEndpointFactory(reactor, run_synchronously, TargetPolicy(), 5)
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[::1]:80/", "http://10.1.2.3/"):
        endpoint = factory.endpointForURI(_uri(url))
        failure_result_of(endpoint.connect(Factory.forProtocol(Protocol)), TargetRefused)
    assert reactor.tcpClients == []


def test_guarded_endpoint_falls_back_to_next_address() -> None:
    """If connecting to the first checked address fails, the next checked address is tried."""
    reactor = MemoryReactorClock()
    factory = GuardedEndpointFactory(
        reactor, _Resolver("::1", "127.0.0.1"), TargetPolicy(allow_loopback=True), 5
    )
    endpoint = factory.endpointForURI(_uri("http://localhost:8080/"))
    connected = endpoint.connect(Factory.forProtocol(Protocol))
    [(host, _port, client_factory, _timeout, _bind)] = reactor.tcpClients
    assert host == "::1"
    client_factory.clientConnectionFailed(reactor.connectors[0], Failure(ConnectionRefusedError()))
    try:
        assert [client[0] for client in reactor.tcpClients] == ["::1", "127.0.0.1"]
    finally:
        connected.addErrback(lambda _: None)


class _Recorder(Protocol):
    """Records that a connection was made and when it is lost."""

    def __init__(self, made: Deferred[None], lost: Deferred[None]) -> None:
        self._made = made
        self._lost = lost

    def connectionMade(self) -> None:
        """Note the connection."""
        if not self._made.called:
            self._made.callback(None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Note the disconnection."""
        if not self._lost.called:
            self._lost.callback(None)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_guarded_endpoint_localhost_allowed_connects() -> None:
    """With C{allow_loopback}, C{localhost} connects to a real loopback listener."""
    from twisted.internet import reactor

    server_made: Deferred[None] = Deferred()
    server_lost: Deferred[None] = Deferred()
    server_factory = Factory.forProtocol(lambda: _Recorder(server_made, server_lost))
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server_factory)
    try:
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        factory = GuardedEndpointFactory(reactor, run_synchronously, TargetPolicy(allow_loopback=True), 5)
        endpoint = factory.endpointForURI(_uri(f"http://localhost:{address.port}/hook"))
        client_lost: Deferred[None] = Deferred()
        client = _Recorder(Deferred(), client_lost)
        await endpoint.connect(Factory.forProtocol(lambda: client)).addTimeout(5, reactor)
        await server_made.addTimeout(5, reactor)
        assert client.transport is not None
        peer = client.transport.getPeer()
        assert isinstance(peer, IPv4Address)
        assert (peer.host, peer.port) == ("127.0.0.1", address.port)
        client.transport.loseConnection()
        await client_lost.addTimeout(5, reactor)
        await server_lost.addTimeout(5, reactor)
    finally:
        stopped = port.stopListening()
        if stopped is not None:
            await stopped

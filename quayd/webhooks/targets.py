"""
Webhook targets are untrusted: URL checks and an endpoint factory that refuses
loopback, private, link-local and metadata addresses after DNS resolution, and
connects to exactly the address it checked (no rebinding between check and
connect).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.web.client import URI
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from quayd.blocking import BlockingRunner


class TargetRefused(Exception):
    """The webhook URL or the address it resolves to is not allowed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetPolicy:
    """Which destination addresses webhooks may reach."""

    allow_loopback: bool = False
    allow_private: bool = False


def check_url(url: str) -> str:
    """
    Validate a webhook URL (http or https, a host, no credentials).

    @raise TargetRefused: With the reason.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise TargetRefused(f"invalid URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the URL must use http or https")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.username or parts.password:
        raise TargetRefused("the URL must not carry credentials")
    if port == 0:
        raise TargetRefused("invalid port")
    if len(url) > 2048:
        raise TargetRefused("the URL is too long")
    return url


def check_address(address: str, policy: TargetPolicy) -> None:
    """
    @raise TargetRefused: If C{address} is in a refused range.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        if not policy.allow_loopback:
            raise TargetRefused(f"{address} is a loopback address")
        return
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        raise TargetRefused(f"{address} is not a unicast address")
    if ip.is_link_local:
        raise TargetRefused(f"{address} is link-local (cloud metadata services live there)")
    metadata = {ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")}
    if ip in metadata:
        raise TargetRefused(f"{address} is a cloud metadata address")
    if (ip.is_private or not ip.is_global) and not policy.allow_private:
        raise TargetRefused(f"{address} is a private address")


@implementer(IStreamClientEndpoint)
class _GuardedEndpoint:
    """Resolves, checks every address, then connects to the first allowed one."""

    def __init__(self, factory: GuardedEndpointFactory, host: str, port: int, tls: bool) -> None:
        self._factory = factory
        self._host = host
        self._port = port
        self._tls = tls

    def connect(self, protocol_factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect after the DNS answer passed the policy."""
        return Deferred.fromCoroutine(self._connect(protocol_factory))

    async def _connect(self, protocol_factory: IProtocolFactory) -> IProtocol:
        infos = await self._factory._run(
            socket.getaddrinfo, self._host, self._port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise TargetRefused(f"{self._host} does not resolve")
        for address in addresses:
            check_address(address, self._factory.policy)
        reactor = self._factory.reactor
        timeout = self._factory.connect_timeout
        last_error: Exception | None = None
        for address in dict.fromkeys(addresses):
            endpoint: IStreamClientEndpoint
            if ":" in address:
                endpoint = TCP6ClientEndpoint(reactor, address, self._port, timeout=timeout)
            else:
                endpoint = TCP4ClientEndpoint(reactor, address, self._port, timeout=timeout)
            if self._tls:
                endpoint = wrapClientTLS(optionsForClientTLS(self._host), endpoint)
            try:
                protocol: IProtocol = await endpoint.connect(protocol_factory)
            except ConnectError as e:
                last_error = e
                continue
            return protocol
        assert last_error is not None
        raise last_error


@implementer(IAgentEndpointFactory)
class GuardedEndpointFactory:
    """An C{Agent} endpoint factory enforcing a L{TargetPolicy}."""

    def __init__(
        self, reactor: object, run_blocking: BlockingRunner, policy: TargetPolicy, connect_timeout: float
    ) -> None:
        self.reactor = reactor
        self._run = run_blocking
        self.policy = policy
        self.connect_timeout = connect_timeout

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """The guarded endpoint for one request URI."""
        host = uri.host.decode("idna") if isinstance(uri.host, bytes) else str(uri.host)
        return _GuardedEndpoint(self, host.strip("[]"), uri.port, uri.scheme == b"https")

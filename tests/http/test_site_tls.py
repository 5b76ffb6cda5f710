"""
L{quayd.http.site.StreamingRequest.isSecure} over real TLS and plain TCP
listeners: the answer is found once per connection and stays right for every
request on it, and Klein routes see the matching URL scheme.
"""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path

import pytest
import pytest_twisted
from klein import Klein
from klein.interfaces import IKleinRequest
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread
from twisted.web.server import Request

from quayd.http.site import QuaydSite
from tests.support.certificates import write_certificate


def _site() -> QuaydSite:
    """One route answering with what the request and Klein's URL map make of the scheme."""
    app = Klein()

    @app.route("/scheme")
    def scheme(request: Request) -> bytes:
        url_scheme = IKleinRequest(request).mapper.url_scheme
        return b"%s %s" % (b"secure" if request.isSecure() else b"plain", url_scheme.encode())

    return QuaydSite(app.resource(), access_log=False)


def _get_twice(connection: http.client.HTTPConnection) -> list[bytes]:
    """Two GETs on one keep-alive connection (run in a thread)."""
    bodies = []
    try:
        for _ in range(2):
            connection.request("GET", "/scheme")
            response = connection.getresponse()
            bodies.append(response.read())
            assert response.status == 200
    finally:
        connection.close()
    return bodies


# Twisted's ssl: endpoint hands pyOpenSSL the certificate and key as pyOpenSSL objects, which
# pyOpenSSL now deprecates; the suite turns warnings into errors.
@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL (X509|PKey) objects is deprecated:DeprecationWarning")
@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]  # pytest_twisted is untyped
async def test_each_connection_answers_for_itself(tmp_path: Path) -> None:
    """
    Alternating plain and TLS connections to one site: both requests on a TLS
    connection are secure (https), both on a plain one are not (http).
    """
    cert, key = write_certificate(tmp_path)
    site = _site()
    secure_port = await serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    ).listen(site)
    plain_port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    try:
        answers = []
        for _ in range(2):
            plain = http.client.HTTPConnection("127.0.0.1", plain_port.getHost().port)
            answers.append(await deferToThread(_get_twice, plain))
            secure = http.client.HTTPSConnection("127.0.0.1", secure_port.getHost().port, context=context)
            answers.append(await deferToThread(_get_twice, secure))
    finally:
        await secure_port.stopListening()
        await plain_port.stopListening()
    assert answers == [[b"plain http"] * 2, [b"secure https"] * 2] * 2

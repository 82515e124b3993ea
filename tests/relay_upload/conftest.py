"""Fixtures of the upload tests: a trustme test CA and a real TLS ingest server."""

from __future__ import annotations

import ssl

import pytest
import trustme

from .support import HOST_CN, IngestServer, Pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """The engine CA, its ingest certificate, this host's client certificate, and a stranger's
    certificate from another CA."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    other = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "cacert.pem"))
    other.cert_pem.write_to_path(str(d / "othercacert.pem"))
    host = ca.issue_cert(HOST_CN, common_name=HOST_CN)
    host.cert_chain_pems[0].write_to_path(str(d / "vdsmcert.pem"))
    host.private_key_pem.write_to_path(str(d / "vdsmkey.pem"))
    stranger = other.issue_cert("intruder.example")
    stranger.cert_chain_pems[0].write_to_path(str(d / "strangercert.pem"))
    stranger.private_key_pem.write_to_path(str(d / "strangerkey.pem"))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_ctx)
    return Pki(str(d / "cacert.pem"), str(d / "vdsmcert.pem"), str(d / "vdsmkey.pem"),
               str(d / "strangercert.pem"), str(d / "strangerkey.pem"),
               str(d / "othercacert.pem"), server_ctx)


@pytest.fixture
async def server(pki):
    srv = IngestServer(pki.server_ctx)
    yield srv
    await srv.stop()

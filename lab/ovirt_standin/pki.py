"""Certificates for tests: an "engine CA" like oVirt's, and a foreign CA for negative tests.

In oVirt the engine CA (``/etc/pki/ovirt-engine/ca.pem``) signs both the engine's HTTPS
certificate and every host's VDSM certificate, whose subject CN is the host's address. The
relay presents that VDSM certificate to the ingest listener, so tests issue client
certificates the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import trustme


@dataclass(frozen=True)
class CertFiles:
    cert: str
    key: str


class TestPKI:
    """Writes PEM files under ``directory``: ``ca.pem``, server and client certificates."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.ca = trustme.CA(organization_name="vmdiag test engine CA")
        self.foreign_ca = trustme.CA(organization_name="some other CA")
        self.ca_file = os.path.join(directory, "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.foreign_ca_file = os.path.join(directory, "foreign-ca.pem")
        self.foreign_ca.cert_pem.write_to_path(self.foreign_ca_file)

    def _write(self, name: str, leaf: trustme.LeafCert) -> CertFiles:
        cert = os.path.join(self.directory, name + ".crt")
        key = os.path.join(self.directory, name + ".key")
        with open(cert, "wb") as handle:
            for blob in leaf.cert_chain_pems:
                handle.write(blob.bytes())
        leaf.private_key_pem.write_to_path(key)
        os.chmod(key, 0o600)
        return CertFiles(cert, key)

    def server(self, name: str = "server") -> CertFiles:
        """A server certificate for localhost / 127.0.0.1 / ::1 signed by the engine CA."""
        leaf = self.ca.issue_cert("localhost", "127.0.0.1", "::1", common_name="localhost")
        return self._write(name, leaf)

    def host(self, common_name: str, foreign: bool = False) -> CertFiles:
        """A host (VDSM) certificate with subject CN ``common_name``, as oVirt issues them."""
        ca = self.foreign_ca if foreign else self.ca
        leaf = ca.issue_cert(common_name, common_name=common_name)
        prefix = "foreign-host-" if foreign else "host-"
        return self._write(prefix + common_name, leaf)

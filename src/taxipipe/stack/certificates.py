"""The stack's TLS files for its Dask scheduler: a certificate authority of its own, the
scheduler's certificate (for the address it listens on) and one certificate its workers and
clients present, all under HOME/stack/tls (keys 0600).

The scheduler and every client verify the other side against the stack's CA (mutual TLS), so a
host without the files the join file carries cannot talk to the scheduler.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from taxipipe.safety.atomic import write_private

#: Certificates last ten years: the stack's `--new-credentials` replaces them, not a calendar.
VALID_DAYS = 3650
CA_NAME = "taxipipe stack CA"


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of one stack, by the names its workers' client settings expect."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def scheduler_cert(self) -> Path:
        return self.directory / "scheduler.pem"

    @property
    def scheduler_key(self) -> Path:
        return self.directory / "scheduler-key.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client-key.pem"

    def complete(self) -> bool:
        return all(path.is_file() for path in (self.ca, self.scheduler_cert, self.scheduler_key,
                                                self.client_cert, self.client_key))


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "taxipipe stack"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey, *,
                 ca: bool = False, address: str | None = None,
                 usage: list[x509.ObjectIdentifier] | None = None) -> x509.Certificate:
    """A certificate for `subject`'s key, signed by the stack's CA key."""
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(CA_NAME))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if address is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make(directory: Path, address: str) -> TlsFiles:
    """The stack's CA, the scheduler's certificate for `address` and the client certificate,
    written to `directory` unless all are there (a changed address makes them anew)."""
    files = TlsFiles(directory)
    if files.complete() and scheduler_address(files) == address:
        return files
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key = _key()
    ca = _certificate(CA_NAME, ca_key, ca_key, ca=True)
    scheduler_key, client_key = _key(), _key()
    # the scheduler also connects to the workers (client.run, a worker's status), as a TLS client
    scheduler = _certificate("dask-scheduler", scheduler_key, ca_key, address=address,
                             usage=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    # workers also accept connections (from the scheduler and each other) with this one
    client = _certificate("dask-client", client_key, ca_key,
                          usage=[ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH])
    for path, data in ((files.ca, ca.public_bytes(serialization.Encoding.PEM)),
                       (files.scheduler_key, _key_pem(scheduler_key)),
                       (files.scheduler_cert, scheduler.public_bytes(serialization.Encoding.PEM)),
                       (files.client_key, _key_pem(client_key)),
                       (files.client_cert, client.public_bytes(serialization.Encoding.PEM))):
        write_private(path, data)
    return files


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def scheduler_address(files: TlsFiles) -> str | None:
    """The IP address the scheduler's certificate names, or None when it names none."""
    certificate = x509.load_pem_x509_certificate(files.scheduler_cert.read_bytes())
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    addresses = names.get_values_for_type(x509.IPAddress)
    return str(addresses[0]) if addresses else None

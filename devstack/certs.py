"""The stack's own PKI: one CA per stack profile and a server certificate per service, kept beside the
other secrets (folder 0700, keys 0600).

Clients trust the CA, never a server certificate, so `hats certs renew` can issue new server certificates
from the same CA at any time and every client keeps connecting; the CA itself lives ten years and is only
replaced by deleting the folder (then every client must be given the new `ca.pem`). Server certificates
name only the loopback host the stack serves (`127.0.0.1`, `::1`, `localhost`): a client that connects to
any other name is refused, as verify-full and Python's hostname check demand.

ECDSA P-256 keys: Mosquitto (OpenSSL), InfluxDB 1.6 (Go), PostgreSQL and Python's ssl all take them, and
issuing one costs milliseconds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.profile import LOOPBACK, Profile, StackConfigError
from devstack.stack_settings import value

SERVICES = ("mosquitto", "influxdb", "postgresql")
CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept at most; the stack renews long before
RENEW_WITHIN_DAYS_SETTING = "HATS_TLS_RENEW_WITHIN_DAYS"
SERVER_NAMES = ("localhost",)
SERVER_ADDRESSES = (LOOPBACK, "::1")
TLS_DIR = "tls"
CA_CERT, CA_KEY = "ca.pem", "ca.key"


@dataclass(frozen=True)
class Issued:
    """A server certificate written: the service, its file and its notAfter."""

    service: str
    path: Path
    not_after: dt.datetime


def tls_dir(profile: Profile) -> Path:
    return profile.path(TLS_DIR)


def ca_file(profile: Profile) -> Path:
    """The CA every client of this stack trusts (HATS_MQTT_CA_FILE, HATS_INFLUX_CA_FILE, sslrootcert)."""
    return tls_dir(profile) / CA_CERT


def cert_file(profile: Profile, service: str) -> Path:
    return tls_dir(profile) / f"{service}.pem"


def key_file(profile: Profile, service: str) -> Path:
    return tls_dir(profile) / f"{service}.key"


def renew_within_days() -> int:
    raw = value(RENEW_WITHIN_DAYS_SETTING)
    try:
        days = int(raw)
    except ValueError:
        raise StackConfigError(f"{RENEW_WITHIN_DAYS_SETTING}={raw!r} is not a number of days; use 1-365") from None
    if not 1 <= days <= 365:
        raise StackConfigError(f"{RENEW_WITHIN_DAYS_SETTING}={days} is outside 1-365")
    return days


def not_after(path: Path) -> dt.datetime:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def _write_private(path: Path, data: bytes) -> None:
    """Written whole under a temporary name, then renamed: a reader never sees half a key."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _ensure_ca(profile: Profile) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    folder = tls_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise StackConfigError(f"{key_path} is not the stack's EC key; delete {folder} to make a new CA")
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hats"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"hats {profile.name} stack CA")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _issue(profile: Profile, service: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    expires = now + dt.timedelta(days=SERVER_DAYS)
    path = cert_file(profile, service)
    if path.exists():  # a renewal always moves notAfter forward, even within the same second
        expires = max(expires, not_after(path) + dt.timedelta(seconds=1))
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVER_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in SERVER_ADDRESSES]
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hats"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, f"hats {profile.name} {service}")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(expires)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    # The key first: a service reloading between the two writes then fails on a mismatch, never serves
    # an old key with a new certificate unnoticed (both files are complete at every moment).
    _write_private(key_file(profile, service), _key_pem(key))
    _write_private(path, cert.public_bytes(serialization.Encoding.PEM))
    return Issued(service, path, cert.not_valid_after_utc)


def _needs_new(profile: Profile, service: str, ca: x509.Certificate, within: dt.timedelta) -> bool:
    path, key = cert_file(profile, service), key_file(profile, service)
    if not (path.exists() and key.exists()):
        return True
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.issuer != ca.subject or cert.not_valid_after_utc - _now() < within


def ensure(profile: Profile) -> list[Issued]:
    """At `hats up`: the CA if missing, and a server certificate for each service that is missing, from
    another CA, expired or expiring within HATS_TLS_RENEW_WITHIN_DAYS; returns those issued."""
    ca, ca_key = _ensure_ca(profile)
    within = dt.timedelta(days=renew_within_days())
    return [_issue(profile, service, ca, ca_key) for service in SERVICES
            if _needs_new(profile, service, ca, within)]


def renew(profile: Profile) -> list[Issued]:
    """New server certificates for every service from the same CA (`hats certs renew`)."""
    ca, ca_key = _ensure_ca(profile)
    return [_issue(profile, service, ca, ca_key) for service in SERVICES]


def server_context(profile: Profile, service: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context with a service's certificate, for a process of ours that serves HTTPS
    or TLS in front of a stack service (a gate in front of InfluxDB, say): the same CA, the same names."""
    if service not in SERVICES:
        raise StackConfigError(f"no certificate for {service!r}; the stack issues {', '.join(SERVICES)}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file(profile, service), key_file(profile, service))
    return context

"""TLS settings fail fast naming the variable; the stack's PKI issues what the services serve, renews what
is expiring and keeps the CA; Mosquitto opens a plaintext listener only when asked."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from devstack import certs, mosquitto, postgres
from devstack.profile import Profile, load_profile
from ingest_worker.settings import ConfigError, load_settings
from tenancy.settings import SettingsError
from tenancy.settings import load_settings as load_tenancy_settings

WORKER = {
    "HATS_MQTT_USERNAME": "u", "HATS_MQTT_PASSWORD": "p", "HATS_INFLUX_WRITE_URL": "https://127.0.0.1:1",
    "HATS_INFLUX_USERNAME": "w", "HATS_INFLUX_PASSWORD": "p", "HATS_INGEST_DSN": "postgresql://x@127.0.0.1/y",
}
TENANCY = {
    "HATS_PG_DSN": "postgresql://x@127.0.0.1/y", "HATS_INFLUX_URL": "https://127.0.0.1:1",
    "HATS_INFLUX_ADMIN_USERNAME": "a", "HATS_INFLUX_ADMIN_PASSWORD": "p", "HATS_INFLUX_USERNAME": "w",
    "HATS_INFLUX_WRITER_USERNAME": "w", "HATS_INFLUX_DAGSTER_USERNAME": "d",
    "HATS_MQTT_HOST": "127.0.0.1", "HATS_MQTT_PORT": "1",
    "HATS_BROKER_ADMIN_USERNAME": "b", "HATS_BROKER_ADMIN_PASSWORD": "p", "HATS_TENANT_SECRETS_DIR": "tenants",
}


@pytest.fixture
def scratch(tmp_path: Path) -> Profile:
    """A profile whose state (and PKI) lives in the test's folder."""
    return Profile(name="test", state_dir=tmp_path / "state", ports=load_profile("test").ports)


@pytest.fixture
def ca(scratch: Profile) -> Path:
    certs.ensure(scratch)
    return certs.ca_file(scratch)


def worker_error(env: pytest.MonkeyPatch, values: dict[str, str]) -> str:
    for key, value in {**WORKER, **values}.items():
        env.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


def test_worker_names_a_missing_ca_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    message = worker_error(clean_env, {"HATS_MQTT_TLS": "1", "HATS_MQTT_CA_FILE": str(missing)})
    assert f"HATS_MQTT_CA_FILE={missing} cannot be read" in message


def test_worker_names_a_ca_file_that_holds_no_certificate(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    message = worker_error(clean_env, {"HATS_INFLUX_CA_FILE": str(junk)})
    assert f"HATS_INFLUX_CA_FILE={junk} holds no PEM certificate" in message


def test_worker_refuses_a_ca_file_without_tls(clean_env: pytest.MonkeyPatch, ca: Path) -> None:
    message = worker_error(clean_env, {"HATS_MQTT_CA_FILE": str(ca), "HATS_INFLUX_WRITE_URL": "http://127.0.0.1:1",
                                       "HATS_INFLUX_CA_FILE": str(ca)})
    assert "HATS_MQTT_CA_FILE is set but HATS_MQTT_TLS is off" in message
    assert "HATS_INFLUX_CA_FILE is set but HATS_INFLUX_WRITE_URL (http://127.0.0.1:1) is not https://" in message


def test_worker_tls_contexts_verify_with_the_ca(clean_env: pytest.MonkeyPatch, ca: Path) -> None:
    for key, value in {**WORKER, "HATS_MQTT_TLS": "1", "HATS_MQTT_CA_FILE": str(ca),
                       "HATS_INFLUX_CA_FILE": str(ca)}.items():
        clean_env.setenv(key, value)
    settings = load_settings()
    for context in (settings.mqtt_tls_context(), settings.influx_verify()):
        assert context is not None
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert [c["subject"] for c in context.get_ca_certs()] == [
            ((("organizationName", "hats"),), (("commonName", "hats test stack CA"),))]


def test_worker_plaintext_broker_has_no_context(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in WORKER.items():
        clean_env.setenv(key, value)
    assert load_settings().mqtt_tls_context() is None


def test_tenancy_names_a_missing_ca_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(SettingsError, match=f"HATS_MQTT_CA_FILE={missing} cannot be read"):
        load_tenancy_settings({**TENANCY, "HATS_MQTT_TLS": "1", "HATS_MQTT_CA_FILE": str(missing)})


def test_the_stack_pki_is_private_and_names_loopback_only(scratch: Profile) -> None:
    issued = certs.ensure(scratch)
    assert [i.service for i in issued] == list(certs.SERVICES)
    folder = certs.tls_dir(scratch)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        name: 0o600 for service in certs.SERVICES for name in (f"{service}.pem", f"{service}.key")} | {
        "ca.pem": 0o600, "ca.key": 0o600}
    for service in certs.SERVICES:
        cert = x509.load_pem_x509_certificate(certs.cert_file(scratch, service).read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(names.get_values_for_type(x509.DNSName)) == {"localhost"}
        assert set(names.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                                  ipaddress.ip_address("::1")}
        certs.server_context(scratch, service)  # the key matches the certificate
    assert certs.ensure(scratch) == []  # nothing missing or expiring: nothing issued


def test_expiring_certificates_are_renewed_at_up_and_the_ca_kept(scratch: Profile,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(certs, "SERVER_DAYS", 10)  # certificates that expire within the 30 days' window
    certs.ensure(scratch)
    ca = certs.ca_file(scratch).read_bytes()
    before = {s: certs.not_after(certs.cert_file(scratch, s)) for s in certs.SERVICES}
    renewed = certs.ensure(scratch)
    assert {i.service: i.not_after for i in renewed}.keys() == before.keys()
    assert all(i.not_after > before[i.service] for i in renewed)
    assert certs.ca_file(scratch).read_bytes() == ca
    context = ssl.create_default_context(cafile=str(certs.ca_file(scratch)))
    context.load_verify_locations(cadata=certs.cert_file(scratch, "influxdb").read_text())  # parses as PEM


@pytest.mark.parametrize("bad", ["0", "soon", "400"])
def test_a_bad_renewal_window_is_named(scratch: Profile, monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(certs.RENEW_WITHIN_DAYS_SETTING, bad)
    with pytest.raises(ValueError, match=certs.RENEW_WITHIN_DAYS_SETTING):
        certs.ensure(scratch)


def test_mosquitto_listens_with_tls_and_plaintext_only_when_asked(scratch: Profile) -> None:
    tls_only = mosquitto.render_config(scratch)
    assert f"listener {scratch.ports['mqtt']} 127.0.0.1\ncertfile {certs.cert_file(scratch, 'mosquitto')}" in tls_only
    assert "tls_version tlsv1.2" in tls_only
    assert f"listener {scratch.ports['mqtt_plain']}" not in tls_only
    both = mosquitto.render_config(Profile(scratch.name, scratch.state_dir, scratch.ports, mqtt_plaintext=True))
    assert f"listener {scratch.ports['mqtt_plain']} 127.0.0.1" in both


def test_plaintext_broker_is_a_dev_profile_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATS_MQTT_PLAINTEXT", "1")
    assert load_profile("dev").mqtt_plaintext
    assert not load_profile("test").mqtt_plaintext
    monkeypatch.setenv("HATS_MQTT_PLAINTEXT", "yes")
    with pytest.raises(ValueError, match="HATS_MQTT_PLAINTEXT='yes'"):
        load_profile("dev")


def test_postgres_dsns_verify_the_server(scratch: Profile) -> None:
    dsn = postgres.dsn(scratch, "u", "p")
    assert dsn.endswith(f"?sslmode=verify-full&sslrootcert={certs.ca_file(scratch)}")
    assert "hostnossl all         all  all          reject" in postgres.render_hba()
    assert "hostnossl replication all  all          reject" in postgres.render_hba()

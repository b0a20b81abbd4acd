"""OPC UA security for the gateway's client: its certificate, the server trust list, logins.

Folders under the site's data dir:

    pki/own/cert.der, pki/own/key.pem   the gateway's client certificate, created once
    pki/trusted/                        server certificates the engineer trusts (DER or PEM)
    pki/rejected/                       an untrusted server's certificate, saved to be moved
                                        to pki/trusted/ once the engineer has checked it

A server is trusted when its exact certificate is in `pki/trusted/` (pinning: OPC UA servers
mostly present self-signed certificates, and a pin survives no silent re-keying). asyncua checks
no server certificate by itself; `apply_security` checks it twice: on the endpoint it picks
before connecting, and through `Client.certificate_validator` on the session's certificate.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from asyncua import Client, ua
from asyncua.crypto import security_policies
from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.data_dir import PKI
from gateway.site.model import Device, opcua_security_problem

CERT_DAYS = 3650  # a gateway's certificate is trusted by hand on each server: make it last
_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {"Sign": ua.MessageSecurityMode.Sign,
          "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}
_LOGIN_REFUSED = {ua.StatusCodes.BadUserAccessDenied: "user access denied",
                  ua.StatusCodes.BadIdentityTokenRejected: "identity token rejected",
                  ua.StatusCodes.BadIdentityTokenInvalid: "identity token invalid"}
_CERT_REFUSED = (ua.StatusCodes.BadSecurityChecksFailed, ua.StatusCodes.BadCertificateUntrusted,
                 ua.StatusCodes.BadCertificateInvalid, ua.StatusCodes.BadCertificateUriInvalid,
                 ua.StatusCodes.BadCertificateUseNotAllowed)
_CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")


class OpcUaSecurityError(ua.UaError):
    """A device's OPC UA security settings, credentials or certificates don't let it connect.

    A `ua.UaError`, so a driver's handler of connect failures catches it; `code` is the OPC UA
    status code closest to the cause, for the readings' cause and the device status.
    """

    def __init__(self, device: str, reason: str,
                 code: int = ua.StatusCodes.BadSecurityChecksFailed) -> None:
        self.device = device
        self.reason = reason
        self.code = code
        super().__init__(f"device {device!r}: {reason}")


@dataclass(frozen=True)
class Pki:
    """The gateway's certificate folders under a data dir."""

    root: Path

    @classmethod
    def of(cls, data_dir: Path) -> Pki:
        return cls(Path(data_dir) / PKI)

    @property
    def cert(self) -> Path:
        return self.root / "own" / "cert.der"

    @property
    def key(self) -> Path:
        return self.root / "own" / "key.pem"

    @property
    def trusted(self) -> Path:
        return self.root / "trusted"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"


def application_uri(site_name: str) -> str:
    return f"urn:scadawatch:gateway:{re.sub(r'[^A-Za-z0-9._-]+', '-', site_name)}"


def client_certificate(data_dir: Path, site_name: str) -> tuple[Path, Path]:
    """(certificate DER, private key PEM) of the gateway, created on first use and kept.

    Never renewed silently: every server trusts this exact certificate, so a new one would
    lock the gateway out until re-trusted everywhere.
    """
    pki = Pki.of(data_dir)
    if pki.cert.is_file() and pki.key.is_file():
        return pki.cert, pki.key
    for folder in (pki.cert.parent, pki.trusted, pki.rejected):
        folder.mkdir(parents=True, exist_ok=True)
    if pki.key.is_file():  # a lost certificate is re-issued for the same key
        key = load_pem_private_key(pki.key.read_bytes(), password=None)
        if not isinstance(key, RSAPrivateKey):  # OPC UA's security policies sign with RSA
            raise ValueError(f"{pki.key}: not an RSA private key, which OPC UA needs")
    else:
        key = generate_private_key()
        _write_atomic(pki.key, dump_private_key_as_pem(key), mode=0o600)
    host = socket.gethostname()
    cert = generate_self_signed_app_certificate(
        key, f"scadawatch gateway {site_name}@{host}", {"organizationName": "scadawatch"},
        [x509.UniformResourceIdentifier(application_uri(site_name)), x509.DNSName(host)],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH], days=CERT_DAYS)
    _write_atomic(pki.cert, cert.public_bytes(Encoding.DER), mode=0o644)
    return pki.cert, pki.key


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def load_certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def certificate_uri(cert: x509.Certificate) -> str:
    """The application URI in a certificate's subject alternative names ("" if none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    return next(iter(san.get_values_for_type(x509.UniformResourceIdentifier)), "")


def thumbprint(cert: x509.Certificate, algorithm: str = "sha1") -> str:
    return hashlib.new(algorithm, cert.public_bytes(Encoding.DER)).hexdigest()


def _trusted_ders(device: str, folder: Path) -> set[bytes]:
    ders: set[bytes] = set()
    for path in sorted(folder.glob("*")) if folder.is_dir() else ():
        if path.suffix.lower() not in _CERT_SUFFIXES:
            continue
        try:
            ders.add(load_certificate(path).public_bytes(Encoding.DER))
        except ValueError as exc:
            raise OpcUaSecurityError(device, f"trusted certificate {path} is neither a DER nor "
                                             f"a PEM certificate: {exc}") from exc
    return ders


def check_server_certificate(device: str, der: bytes, data_dir: Path) -> None:
    """Raise `OpcUaSecurityError` unless `der` is in the trust list and in its validity period.

    An untrusted certificate is saved under pki/rejected/ for the engineer to move.
    """
    pki = Pki.of(data_dir)
    cert = x509.load_der_x509_certificate(der)
    if der not in _trusted_ders(device, pki.trusted):
        pki.rejected.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", common_name(cert)).strip("_") or "server"
        saved = pki.rejected / f"{name}_{thumbprint(cert)[:16]}.der"
        if not saved.exists():
            _write_atomic(saved, der, mode=0o644)
        raise OpcUaSecurityError(device, (
            f"server certificate not trusted (CN={common_name(cert)}, SHA-1 thumbprint "
            f"{thumbprint(cert)}); saved to {saved} — move it to {pki.trusted}/ to trust it"),
            ua.StatusCodes.BadCertificateUntrusted)
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise OpcUaSecurityError(device, (
            f"server certificate CN={common_name(cert)} is valid from "
            f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}, "
            "not now"), ua.StatusCodes.BadCertificateTimeInvalid)


def read_password(device: Device) -> str:
    """The device's password from its env var or file; named in errors, never shown."""
    if device.password_env is not None:
        password = os.environ.get(device.password_env)
        if password is None:
            raise OpcUaSecurityError(device.name, (
                f"password_env: environment variable {device.password_env} is not set "
                f"(it holds the password of user {device.username!r})"))
        return password
    if device.password_file is not None:
        path = device.password_file
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise OpcUaSecurityError(device.name, (
                f"password_file: cannot read {path}: "
                f"{getattr(exc, 'strerror', None) or exc}")) from exc
    raise OpcUaSecurityError(device.name, (
        f"username {device.username!r} needs password_env or password_file"))


async def apply_security(client: Client, device: Device, data_dir: Path,
                         site_name: str) -> None:
    """Set `client` up for `device`'s security policy, mode and login; call before connect().

    For a secure policy this asks the server for its endpoints (network I/O: connection
    errors pass through as they are) and checks the server certificate against the trust
    list. Security failures during connect() then raise `OpcUaSecurityError` too.
    """
    if (bad := opcua_security_problem(device.security_policy, device.security_mode)):
        raise OpcUaSecurityError(device.name, f"{bad[0]}: {bad[1]}")
    if device.username is not None:
        client.set_user(device.username)
        client.set_password(read_password(device))
    _explain_connect_failures(client, device.name)
    if device.security_policy == "None":
        return
    cert, key = client_certificate(data_dir, site_name)
    # the URI in the certificate, not one derived anew: servers reject a mismatch
    client.application_uri = certificate_uri(load_certificate(cert))
    policy = _POLICIES[device.security_policy]
    try:
        await client.set_security(policy, cert, key, mode=_MODES[device.security_mode])
    except ua.UaError as exc:
        if "No matching endpoints" not in str(exc):
            raise
        raise OpcUaSecurityError(device.name, (
            f"server offers no endpoint with policy {device.security_policy} and mode "
            f"{device.security_mode}")) from exc
    if (peer := client.security_policy.peer_certificate) is None:
        raise OpcUaSecurityError(device.name, "the server sent no certificate")
    check_server_certificate(device.name, peer, data_dir)

    async def validate(cert: x509.Certificate, _server: ua.ApplicationDescription) -> None:
        check_server_certificate(device.name, cert.public_bytes(Encoding.DER), data_dir)

    client.certificate_validator = validate


def _explain_connect_failures(client: Client, device: str) -> None:
    """Turn the bare errors of a refused channel or login into `OpcUaSecurityError`.

    The driver calls `client.connect()` itself; wrapping the two steps on this client object
    gives it the clear error without a connect of our own.
    """
    client.open_secure_channel = _reraise(  # type: ignore[method-assign]
        client.open_secure_channel, device, _channel_refused)
    client.create_session = _reraise(  # type: ignore[method-assign]
        client.create_session, device, _channel_refused)
    client.activate_session = _reraise(  # type: ignore[method-assign]
        client.activate_session, device, _login_refused)


def _channel_refused(exc: BaseException) -> str | None:
    # asyncua reports a server's refusal of the client certificate as a bare AssertionError
    if isinstance(exc, AssertionError) or (
            isinstance(exc, ua.UaStatusCodeError) and exc.code in _CERT_REFUSED):
        return ("the server refused the gateway's client certificate: the server admin must "
                "trust it (`scadawatch opcua cert` shows it and where it is)")
    return None


def _login_refused(exc: BaseException) -> str | None:
    if isinstance(exc, ua.UaStatusCodeError) and exc.code in _LOGIN_REFUSED:
        return f"login refused by the server ({_LOGIN_REFUSED[exc.code]}): check username " \
               "and password"
    return None


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reraise(step: Callable[_P, Awaitable[_R]], device: str,
             explain: Callable[[BaseException], str | None]
             ) -> Callable[_P, Coroutine[Any, Any, _R]]:
    @wraps(step)
    async def wrapped(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await step(*args, **kwargs)
        except Exception as exc:
            if (reason := explain(exc)) is None:
                raise
            code = exc.code if isinstance(exc, ua.UaStatusCodeError) else \
                ua.StatusCodes.BadSecurityChecksFailed
            raise OpcUaSecurityError(device, reason, code) from exc
    return wrapped

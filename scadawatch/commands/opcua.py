"""`scadawatch opcua cert`: the gateway's OPC UA client certificate, shown for the server admin."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.inputs.opcua.security import (
    Pki,
    certificate_uri,
    client_certificate,
    common_name,
    load_certificate,
    thumbprint,
)
from gateway.site.loader import ConfigError, load_site
from scadawatch.cli import EXIT_OK, UsageError


def main(args: argparse.Namespace) -> int:
    if args.config is not None:
        try:
            site = load_site(args.config)
        except ConfigError as e:
            raise UsageError("\n".join(str(p) for p in e.problems)) from None
        data_dir, site_name = site.site.data_dir, site.site.name
    else:
        data_dir, site_name = Path(args.data_dir), args.site
    pki = Pki.of(data_dir)
    existed = pki.cert.is_file() and pki.key.is_file()
    try:
        cert_path, key_path = client_certificate(data_dir, site_name)
        cert = load_certificate(cert_path)
    except (OSError, ValueError) as e:
        raise UsageError(f"{pki.root}: cannot create or read the client certificate: {e}") from None
    lines = [
        f"certificate: {cert_path} ({'existing' if existed else 'created now'})",
        f"private key: {key_path} (keep it on this machine)",
        f"subject: {cert.subject.rfc4514_string()}",
        f"application URI: {certificate_uri(cert)}",
        f"valid: {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}",
        f"SHA-1 thumbprint: {thumbprint(cert, 'sha1')}",
        f"SHA-256 thumbprint: {thumbprint(cert, 'sha256')}",
        "",
        f"server admin: copy {cert_path} into each OPC UA server's trusted client certificates "
        "(e.g. node-opcua: pki/trusted/certs/; many servers list it as rejected after the "
        f"gateway's first attempt: compare the thumbprint, then trust it); CN={common_name(cert)}",
        f"server certificates the gateway trusts go in {pki.trusted}/ (DER or PEM); an "
        f"untrusted server's certificate is saved to {pki.rejected}/ for you to check and move",
    ]
    print("\n".join(lines))
    return EXIT_OK

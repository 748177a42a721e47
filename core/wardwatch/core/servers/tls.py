"""A throwaway CA with server and client certificates (``openssl``), for TLS listeners in tests and ``wardwatch up``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wardwatch.core.errors import ConfigError
from wardwatch.core.servers.process import LOOPBACK, _run_tool

# --- TLS material -------------------------------------------------------------------------------

_OPENSSL_CONFIG = """\
# Written by wardwatch.core.servers: extensions for a throwaway test CA and its leaf certificates.
[req]
distinguished_name = dn
prompt = no

[dn]
CN = wardwatch

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class TlsMaterial:
    """PEM files of a throwaway CA and of a server and a client certificate it signed."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_ca_and_server_cert(
    directory: Path | str,
    *,
    dns_names: tuple[str, ...] = ("localhost",),
    ip_addresses: tuple[str, ...] = (LOOPBACK,),
    client_name: str = "wardwatch-test-client",
    days: int = 30,
) -> TlsMaterial:
    """Make a CA, a server certificate (SAN ``dns_names`` + ``ip_addresses``) and a client certificate.

    Uses P-256 keys and the ``openssl`` command (OpenSSL >= 3.0 for ``req -CA``): three processes,
    a few tens of milliseconds. Private keys are written with mode 0600.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in (*dns_names, client_name):
        if not name or any(c in name for c in "/\\,=\n"):
            raise ConfigError(f"{name!r} cannot be used in a certificate name", key="dns_names")
    san = ", ".join([*(f"DNS:{n}" for n in dns_names), *(f"IP:{ip}" for ip in ip_addresses)])
    config = out / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG.format(san=san))
    tls = TlsMaterial(
        ca_cert=out / "ca.crt",
        ca_key=out / "ca.key",
        server_cert=out / "server.crt",
        server_key=out / "server.key",
        client_cert=out / "client.crt",
        client_key=out / "client.key",
    )
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    common = ["-days", str(days), "-config", str(config)]
    jobs = [
        (tls.ca_cert, tls.ca_key, "wardwatch test CA", "ca_ext"),
        (tls.server_cert, tls.server_key, dns_names[0] if dns_names else "server", "server_ext"),
        (tls.client_cert, tls.client_key, client_name, "client_ext"),
    ]
    for cert, key, subject, extensions in jobs:
        signed_by_ca = [] if cert == tls.ca_cert else ["-CA", str(tls.ca_cert), "-CAkey", str(tls.ca_key)]
        _run_tool(
            [
                *("openssl", "req", "-x509", *new_key, "-keyout", str(key), "-out", str(cert)),
                *("-subj", f"/CN={subject}", "-extensions", extensions, *common, *signed_by_ca),
            ],
            "openssl",
            hint=" (this needs OpenSSL 3.0 or later: run scripts/setup)",
        )
        key.chmod(0o600)
    return tls

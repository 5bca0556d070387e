"""TLS for MQTT clients (kiosks, collectors, admin tools): mutual TLS 1.2+ against the device CA."""

from __future__ import annotations

import ssl
from pathlib import Path

from kiosk.keys import check_private_perms


def client_tls_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A client context that trusts only the device CA and presents our certificate.

    TLS 1.3 is negotiated when the broker offers it; 1.2 is the floor (older is refused).
    """
    for p, what in ((ca_file, "CA certificate"), (cert_file, "client certificate"), (key_file, "client key")):
        if not Path(p).is_file():
            raise FileNotFoundError(f"{what} not found: {p}")
    # As the link's keys: a TLS key others can read is refused, not used (found by a review).
    check_private_perms(Path(key_file))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.load_verify_locations(cafile=str(ca_file))
    ctx.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    return ctx

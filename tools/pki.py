"""The device PKI: a dedicated CA, and TLS certificates for the broker, kiosks, collectors, admins.

Identities are the certificates' common names, which mosquitto turns into MQTT user names
(``use_identity_as_username``), which the ACL then uses:

* a kiosk is its id (``kiosk-0042``: lower-case letters, digits, '-');
* a collector is ``collector.NAME``, an admin ``admin.NAME``: the dot can never occur in a kiosk id,
  so no kiosk certificate can ever carry a service identity.

Keys are EC P-256 (fast handshakes on small CPUs, universally supported by OpenSSL/mosquitto),
written 0600. The CA key should live offline; ``issue`` needs it only to sign.

Revocation: ``issue`` records every certificate it signs in ``issued.jsonl`` (serial, CN, expiry),
so ``revoke`` can find all the certificates of a decommissioned kiosk; ``revoked.json`` keeps the
revoked serials and ``crl.pem`` is the CRL signed by the CA that the broker enforces (``crlfile``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kiosk.keys import check_private_perms, write_private_file, write_public_file
from kiosk.templates import atomic_write
from kiosk.topics import validate_id
from tools.central.errors import CentralError

Role = Literal["kiosk", "collector", "admin", "server"]
CA_KEY = "ca.key"
CA_CERT = "ca.crt"
ISSUED_INDEX = "issued.jsonl"     # one JSON line per certificate the CA signed
REVOKED_INDEX = "revoked.json"    # the revoked serials, the source of the CRL
CRL_FILE = "crl.pem"
# The CRL is a local file handed to our own broker, not fetched by anybody: its nextUpdate only has
# to lie beyond any realistic gap between two revocations, because OpenSSL refuses EVERY client once
# the CRL it checks against has expired. Re-signing it (``write_crl``) moves it forward.
CRL_DAYS = 3650
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")   # matched whole: fullmatch


class PkiError(CentralError, ValueError):
    pass


def identity(role: Role, name: str) -> str:
    """The certificate CN (= MQTT user name) for a role and a name."""
    if role == "kiosk":
        return validate_id(name, "kiosk id")
    if role in ("collector", "admin"):
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise PkiError(f"invalid {role} name {name!r}: lower-case letters, digits, '-'")
        return f"{role}.{name}"
    if role == "server":
        return name
    raise PkiError(f"unknown role {role!r}")


@dataclass(frozen=True)
class IssuedCert:
    cert_path: Path
    key_path: Path
    common_name: str


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def init_ca(directory: Path, *, name: str = "sigkiosk device CA", days: int = 3650) -> Path:
    """Create ``ca.key`` (0600) and ``ca.crt`` in ``directory``; refuse to overwrite an existing CA."""
    directory = Path(directory)
    if (directory / CA_KEY).exists() or (directory / CA_CERT).exists():
        raise FileExistsError(f"a CA already exists in {directory}")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private_file(directory / CA_KEY, _key_pem(key))
    write_public_file(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    return directory / CA_CERT


def _load_ca(ca_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_dir = Path(ca_dir)
    try:
        check_private_perms(ca_dir / CA_KEY)   # as every other private key (found by a review)
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
    except FileNotFoundError:
        raise PkiError(f"no CA in {ca_dir}: run `sigkiosk admin init-ca --dir {ca_dir}` first") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("the CA key is not an EC key")
    return key, cert


def issue(
    ca_dir: Path, role: Role, name: str, out_dir: Path, *, days: int = 825,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), csr_pem: bytes | None = None,
) -> IssuedCert:
    """Issue a certificate for ``role``/``name`` into ``out_dir`` (``<cn>.crt`` and ``<cn>.key``).

    With ``csr_pem`` the key stays where it was generated (on the kiosk) and only the certificate
    is written; the CSR's subject is ignored: the CN is always the one derived from role and name.
    """
    ca_key, ca_cert = _load_ca(ca_dir)
    cn = identity(role, name)
    other = issued_roles(ca_dir, cn) - {role, "?"}   # "?": an index line from before roles were kept
    if other:
        # One name, one role: a kiosk called like the broker's host ("broker", "localhost") shared
        # its CN with the server's certificate, so revoking the kiosk revoked the broker's serials
        # too, and issuing both into one folder replaced one's private key (found by a review).
        raise PkiError(f"{cn!r} is already issued as {', '.join(sorted(other))}: choose another {role} name")
    out_dir = Path(out_dir)
    key_path = out_dir / f"{cn}.key"
    cert_path = out_dir / f"{cn}.crt"
    if csr_pem is not None:
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise PkiError("the CSR's signature is invalid")
        public_key = csr.public_key()
        key = None
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        # Never past the CA's own end: a certificate that outlives its CA stops working on the
        # CA's expiry day anyway, with the rest of the fleet, while saying it is good for years
        # (found by a review).
        .not_valid_after(min(_now() + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False  # type: ignore[arg-type]
        )
    )
    if role == "server":
        sans: list[x509.GeneralName] = []
        for h in dict.fromkeys((name, *hosts)):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    if key is not None:
        write_private_file(key_path, _key_pem(key), overwrite=True)
    write_public_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _record_issued(Path(ca_dir), cert, role)
    return IssuedCert(cert_path, key_path, cn)


def _record_issued(ca_dir: Path, cert: x509.Certificate, role: str) -> None:
    """Append the certificate to the CA's issuance index (append + fsync: never lose a line)."""
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    line = json.dumps({"serial": format(cert.serial_number, "x"), "cn": cn, "role": role,
                       "not_after": cert.not_valid_after_utc.isoformat()}) + "\n"
    with open(ca_dir / ISSUED_INDEX, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


@dataclass(frozen=True)
class RevokedCert:
    serial: int
    common_name: str
    revoked_at: dt.datetime


def issued_roles(ca_dir: Path, common_name: str) -> set[str]:
    """The roles this CA issued ``common_name`` certificates for (from ``issued.jsonl``)."""
    return {role for role, _serial in _issued(ca_dir, common_name)}


def issued_serials(ca_dir: Path, common_name: str) -> list[int]:
    """The serials of every certificate this CA issued to ``common_name`` (from ``issued.jsonl``)."""
    return [serial for _role, serial in _issued(ca_dir, common_name)]


def _issued(ca_dir: Path, common_name: str) -> list[tuple[str, int]]:
    path = Path(ca_dir) / ISSUED_INDEX
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if rec["cn"] == common_name:
                out.append((str(rec.get("role", "?")), int(rec["serial"], 16)))
        except (ValueError, KeyError, TypeError) as exc:
            raise PkiError(f"{path} line {n} is invalid: {exc}") from None
    return out


def revoked(ca_dir: Path) -> list[RevokedCert]:
    path = Path(ca_dir) / REVOKED_INDEX
    if not path.exists():
        return []
    try:
        return [RevokedCert(int(r["serial"], 16), r["cn"], dt.datetime.fromisoformat(r["revoked_at"]))
                for r in json.loads(path.read_text(encoding="utf-8"))["revoked"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise PkiError(f"{path} is invalid: {exc}") from None


def cert_common_name(cert_file: Path) -> str:
    """The subject common name of a PEM certificate (``admin.NAME``, ``kiosk-0001``...)."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def revoke(ca_dir: Path, common_name: str, *, cert_files: tuple[Path, ...] = ()) -> list[RevokedCert]:
    """Revoke every certificate issued to ``common_name`` (and the given certificate files), then
    re-sign the CRL. Returns the newly revoked certificates; raises if there is nothing to revoke."""
    ca_dir = Path(ca_dir)
    serials = set(issued_serials(ca_dir, common_name))
    for f in cert_files:   # certificates issued before the index existed, or by hand
        cert = x509.load_pem_x509_certificate(Path(f).read_bytes())
        cn = cert_common_name(Path(f))
        if cn != common_name:
            raise PkiError(f"{f} belongs to {cn!r}, not {common_name!r}")
        serials.add(cert.serial_number)
    if not serials:
        raise PkiError(f"no certificate of {common_name!r} in {ca_dir / ISSUED_INDEX}: give its certificate file")
    if {role for role, serial in _issued(ca_dir, common_name) if serial in serials} == {"server"}:
        # The kiosks, collectors and admin tools do not check a CRL for the broker's certificate:
        # this would say "revoked" while every client still trusted it (found by a review).
        raise PkiError(f"{common_name!r} names broker (server) certificates, which the clients do not check against "
                       "the CRL: a stolen broker key is answered by a new CA and new certificates for all")
    # One revocation at a time: two at once each read revoked.json before the other wrote it, and
    # one kiosk's revocation was lost from it and from every later CRL (found by a review).
    lock = os.open(ca_dir / f".{REVOKED_INDEX}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = revoked(ca_dir)
        known = {r.serial for r in current}
        now = _now().replace(microsecond=0)
        new = [RevokedCert(s, common_name, now) for s in sorted(serials - known)]
        all_revoked = current + new
        data = {"format": 1, "revoked": [{"serial": format(r.serial, "x"), "cn": r.common_name,
                                          "revoked_at": r.revoked_at.isoformat()} for r in all_revoked]}
        # Fsynced, file and folder: a power cut must not leave an empty or older revocation list.
        atomic_write(ca_dir / REVOKED_INDEX, (json.dumps(data, indent=2) + "\n").encode(), mode=0o644)
        write_crl(ca_dir)
    finally:
        os.close(lock)
    return new


def write_crl(ca_dir: Path, *, days: int = CRL_DAYS) -> Path:
    """(Re-)sign ``crl.pem`` with the CA from ``revoked.json`` (empty if nothing is revoked)."""
    ca_dir = Path(ca_dir)
    ca_key, ca_cert = _load_ca(ca_dir)
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
    )
    for r in revoked(ca_dir):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(r.serial).revocation_date(r.revoked_at).build())
    crl = builder.sign(ca_key, hashes.SHA256())
    atomic_write(ca_dir / CRL_FILE, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return ca_dir / CRL_FILE


def make_csr(key_path: Path, common_name: str) -> bytes:
    """On the kiosk: create a TLS key (0600) and return a CSR to send to the admin."""
    key = ec.generate_private_key(ec.SECP256R1())
    write_private_file(Path(key_path), _key_pem(key))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)

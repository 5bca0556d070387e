"""``sigkiosk run --check``: is this configuration's world in place, not only its syntax?

``parse_config`` already refuses unknown keys and bad values. These checks look at what the file
points to: the key and certificate files exist and parse, the TLS key matches its certificate,
the certificate is the kiosk's (CN = ``[kiosk] id``), issued by ``[link] ca_file`` and in date,
and (``broker=True``) the broker answers a real MQTT connection made with the kiosk's identity.
Each problem is a ``Finding`` naming the table, the key, the file and the fix. The daemon runs the
file checks before it starts, so a missing key is one line at start, not a traceback.
"""

from __future__ import annotations

import datetime as dt
import stat
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from kiosk.config import NOTHING_RECORDS, DaemonConfig
from kiosk.keys import KeyFileError, load_public_raw, load_signing_key
from kiosk.link import describe_connection_error
from kiosk.templates import TemplateError, load_or_create_key
from kiosk.tls import client_tls_context

Level = Literal["error", "warning"]
#: A certificate (the kiosk's, the device CA's) that lapses within this is a warning: the day it
#: does, the kiosk is cut off from the broker, and with a CA the whole fleet is.
EXPIRY_WARNING = dt.timedelta(days=30)


@dataclass(frozen=True)
class Finding:
    level: Level          # error: the daemon cannot work like this; warning: it runs, but something is off
    where: str            # "[link] key_file"
    message: str          # what is wrong and how to fix it

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


def _missing(path: Path, fix: str) -> str:
    return f"{path} does not exist ({fix})"


def _readable(path: Path, where: str, fix: str, out: list[Finding]) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        out.append(Finding("error", where, _missing(path, fix)))
    except IsADirectoryError:
        out.append(Finding("error", where, f"{path} is a directory, not a file"))
    except OSError as exc:
        out.append(Finding("error", where, f"cannot read {path}: {exc.strerror}"))
    return None


def check_files(config: DaemonConfig) -> list[Finding]:
    """Every file the configuration names, without the network."""
    out: list[Finding] = []
    _check_storage(config, out)
    if config.commands.enabled and config.commands.central_sign_pub is not None:
        _check_public_key(config.commands.central_sign_pub, "[commands] central_sign_pub",
                          "copy the central server's central-sign.pub here", out)
    if config.link is not None:
        _check_link(config, out)
    elif not config.unrecorded:
        out.append(Finding("error", "[link]", NOTHING_RECORDS))
    if config.update is not None:
        for key in dict.fromkeys(config.update.admin_keys):
            _check_public_key(key, "[update] admin_keys", "copy the admin's public key here: the .pub "
                              "that sigkiosk admin bundle-key wrote next to the signing key", out)
    out.extend(_deprecated(config))
    return out


def _deprecated(config: DaemonConfig) -> list[Finding]:
    """Keys older files carry that the configuration now takes from elsewhere (parse_config accepts them)."""

    if config.source is None:
        return []
    try:
        link = tomllib.loads(Path(config.source).read_text()).get("link", {})
    except (OSError, tomllib.TOMLDecodeError):
        return []
    return [Finding("warning", f"[link] {key}", f"no longer needed: the link uses [kiosk] {kiosk_key}; remove it")
            for key, kiosk_key in (("kiosk_id", "id"), ("site", "site")) if key in link]


def check_config(config: DaemonConfig, *, broker: bool = False, timeout_s: float = 10.0) -> list[Finding]:
    """``check_files`` and, with ``broker``, a connection to the broker (only if the files are fine)."""
    out = check_files(config)
    if broker:
        if config.link is None:
            out.append(Finding("warning", "[link]", "no [link] table: there is no broker to check"))
        elif not any(f.level == "error" and f.where.startswith("[link]") for f in out):
            problem = check_broker(config, timeout_s=timeout_s)
            if problem is not None:
                out.append(Finding("error", "[link] broker", problem))
    return out


# -- storage ------------------------------------------------------------------------------------

def _check_storage(config: DaemonConfig, out: list[Finding]) -> None:
    key = config.storage.template_key
    if not key.exists():
        if config.storage.create_key:
            out.append(Finding("warning", "[storage] template_key", f"{key} does not exist yet; the daemon "
                               "creates it at its first start (create_key = true)"))
        else:
            out.append(Finding("error", "[storage] template_key", _missing(
                key, "create it with: sigkiosk run --config FILE --init-key --owner sigkiosk")))
        return
    try:
        load_or_create_key(key, create=False)
    except (TemplateError, OSError) as exc:
        out.append(Finding("error", "[storage] template_key", str(exc)))


# -- keys and certificates ----------------------------------------------------------------------

def _check_public_key(path: Path, where: str, fix: str, out: list[Finding]) -> None:
    _check_key_file(path, where, fix, load_public_raw, out)


def _check_key_file(path: Path, where: str, fix: str, load: Callable[[Path], Any], out: list[Finding]) -> None:
    """The key file exists and ``load`` accepts it."""
    if not Path(path).exists():
        out.append(Finding("error", where, _missing(path, fix)))
        return
    try:
        load(path)
    except KeyFileError as exc:
        out.append(Finding("error", where, str(exc)))


def _load_certs(path: Path, where: str, fix: str, out: list[Finding]) -> list[Any]:
    """The PEM certificates in ``path`` (a CA file or a certificate with its chain); [] if unusable."""

    data = _readable(path, where, fix, out)
    if data is None:
        return []
    try:
        return list(x509.load_pem_x509_certificates(data))
    except ValueError:
        out.append(Finding("error", where, f"{path} is not a PEM certificate"))
        return []


def _check_link(config: DaemonConfig, out: list[Finding]) -> None:

    link = config.link
    assert link is not None
    issued = "issue it with: sigkiosk admin issue-cert --kiosk ID --ca-dir CA --out DIR"
    cas = _load_certs(link.ca_file, "[link] ca_file", "copy the fleet's device CA certificate, ca.crt, here", out)
    chain = _load_certs(link.cert_file, "[link] cert_file", issued, out)
    cert = chain[0] if chain else None
    key_data = _readable(link.key_file, "[link] key_file", "the private key that goes with cert_file", out)
    key = None
    if key_data is not None:
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except (ValueError, TypeError):
            out.append(Finding("error", "[link] key_file", f"{link.key_file} is not an unencrypted PEM private key"))
        mode = Path(link.key_file).stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            out.append(Finding("warning", "[link] key_file", f"{link.key_file} is readable by group or others "
                               f"(mode {stat.S_IMODE(mode):o}); chmod 600 it"))
    if cert is not None:
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names != [link.kiosk_id]:
            out.append(Finding("error", "[link] cert_file",
                               f"{link.cert_file} is for {', '.join(map(str, names)) or 'no CN'!s}, not this kiosk "
                               f"({link.kiosk_id!r}, [kiosk] id): the broker knows a kiosk by its certificate's CN"))
        now = dt.datetime.now(dt.timezone.utc)
        if cert.not_valid_after_utc < now:
            out.append(Finding("error", "[link] cert_file",
                               f"{link.cert_file} expired on {cert.not_valid_after_utc:%Y-%m-%d}; {issued}"))
        elif cert.not_valid_after_utc < now + EXPIRY_WARNING:
            # Said while there is time to act: the day it lapses the kiosk is cut off.
            out.append(Finding("warning", "[link] cert_file",
                               f"{link.cert_file} expires on {cert.not_valid_after_utc:%Y-%m-%d} (in "
                               f"{(cert.not_valid_after_utc - now).days} days); {issued}"))
        elif cert.not_valid_before_utc > now:
            out.append(Finding("error", "[link] cert_file",
                               f"{link.cert_file} is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
                               "(is the kiosk's clock right?)"))
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if key is not None and cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            out.append(Finding("error", "[link] key_file",
                               f"{link.key_file} does not match the certificate {link.cert_file}: "
                               "cert_file and key_file must be one pair"))
        if cas and not any(_issued_by(cert, issuer, InvalidSignature) for issuer in [*cas, *chain[1:]]):
            # One device CA signs the broker's and the kiosks' certificates (tools/pki.py). With
            # bundles (intermediates), a path this check does not build may still exist: warn only.
            level: Level = "error" if len(cas) == 1 and len(chain) == 1 else "warning"
            out.append(Finding(level, "[link] cert_file",
                               f"{link.cert_file} is not issued by the CA in ca_file {link.ca_file}: "
                               "the broker would refuse it (unknown ca)"))
    if cas and not any(_is_ca(ca, x509) for ca in cas):
        out.append(Finding("error", "[link] ca_file", f"{link.ca_file} holds no CA certificate"))
    for ca in cas:
        lapse = ca.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
        if lapse < EXPIRY_WARNING:
            out.append(Finding("error" if lapse.total_seconds() < 0 else "warning", "[link] ca_file",
                               f"the device CA in {link.ca_file} {'expired' if lapse.total_seconds() < 0 else 'expires'} "
                               f"on {ca.not_valid_after_utc:%Y-%m-%d}: every certificate it issued stops working "
                               "then; make a new CA and re-issue the fleet's certificates before"))
    _check_key_file(link.sign_key_file, "[link] sign_key_file",
                       "the kiosk's Ed25519 signing key: sigkiosk admin gen-keys --kiosk ID --out DIR",
                       load_signing_key, out)
    _check_public_key(link.central_pub_file, "[link] central_pub_file",
                      "copy the central server's central-enc.pub here", out)
    if link.group is None:
        out.append(Finding("warning", "[link] group",
                           "not set: a model rollout to a group (sigkiosk admin push --group G) never reaches this "
                           "kiosk; set it to the group the kiosk is registered in (sigkiosk admin register --group)"))


def _issued_by(cert: Any, issuer: Any, invalid: type[Exception]) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, invalid):
        return False
    return True


def _is_ca(cert: Any, x509: Any) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


# -- the broker ---------------------------------------------------------------------------------

def check_broker(config: DaemonConfig, *, timeout_s: float = 10.0) -> str | None:
    """Connect to the broker as this kiosk (TLS + MQTT CONNECT); None if it accepts, else why not.

    The broker knows a kiosk by its certificate, so this connection takes over the session of a
    kiosk daemon running with the same identity: it reconnects by itself within seconds.
    """


    link = config.link
    assert link is not None
    host, port = link.broker_host, int(link.broker_port)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=link.kiosk_id, protocol=mqtt.MQTTv5)
    client.connect_timeout = timeout_s
    done = threading.Event()
    result: dict[str, str | None] = {}

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        result["rc"] = None if not rc.is_failure else str(rc)
        done.set()

    def on_log(c: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            result.setdefault("socket", buf)

    def on_disconnect(c: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        done.set()

    client.on_connect, client.on_log, client.on_disconnect = on_connect, on_log, on_disconnect
    try:
        client.tls_set_context(client_tls_context(link.ca_file, link.cert_file, link.key_file))
        client.connect(host, port, keepalive=30)
    except OSError as exc:   # ssl.SSLError, refused, DNS, timeout
        return describe_connection_error(exc, host, port)
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return f"timed out: no answer to MQTT CONNECT from {host}:{port} in {timeout_s:.0f} s"
        if "rc" in result:
            rc = result["rc"]
            return None if rc is None else (f"auth: the broker refused this kiosk ({rc}); is {link.kiosk_id!r} "
                                            "registered (sigkiosk admin register) and its certificate not revoked?")
        return describe_connection_error(result.get("socket") or "connection closed before CONNACK", host, port)
    finally:
        client.disconnect()
        client.loop_stop()

"""The encrypted template store: each customer's reference signatures, AES-256-GCM at rest.

One file per customer, named by a keyed hash of the customer reference (the directory listing
reveals no customer ids). The file holds ``MAGIC | nonce | ciphertext``; the associated data binds
it to its customer, so a file copied over another customer's is refused, not silently used.

What is stored is the reference *trajectories*, not a model's features: when a new model becomes
active (model-update agent), every template is rebuilt from them, and a feature computed by an
old model can never be compared with one from a new model. Paper references (a customer enrolled
from scans or camera photos) are kept the same way, as what any CNN-LSTM embeds: the prepared ink
image and the hand-made features of each picture (``models.paper_reference.PaperReference``, with
the version of the preparation that made it), never the photo and never an embedding.

Beside each customer's file, the kiosk keeps the written paths (``models.path_copy``) of the
latest signatures the customer gave it and it approved (:data:`SEEN_DEFAULT`, ``[storage]
seen_signatures``; ``.seen``, encrypted and bound to the customer the same way): a recording of one
of them played to the pen again is a copy (``models.verification.PenVerifier.verify(...,
seen=...)``). New pen references (a Replace), or none, forget them; deleting the customer deletes
them.

The key (32 random bytes, file mode 0600) lives apart from the data - by default in the service's
credentials directory, not under the state directory - so a copy of the state directory alone
reads nothing. Writes are atomic (temporary file, fsync, rename, fsync of the directory): a power
cut mid-write leaves the previous version or the new one, never a torn file.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiosk.errors import ApplianceError
from models.paper_reference import PaperReference
from models.path_copy import PATH_KINDS, PATH_POINTS
from models.trajectory import DeviceInfo, Trajectory

log = logging.getLogger(__name__)

MAGIC = b"SKT1"
NONCE_LEN = 12
KEY_LEN = 32
SUFFIX = ".tpl"
SEEN_SUFFIX = ".seen"
#: Signatures a customer gave the kiosk whose written paths it keeps (the newest approved; ``[storage]
#: seen_signatures``): 16 prints of two paths of 256 points are 64 KiB (float32). Comparing a
#: genuine question with them added 0.2 ms at the median on SUSIG-Visual, and up to 5 ms when every
#: kept print lies just past the copy line, so that none is abandoned early (a review, 2026-11-30).
SEEN_DEFAULT = 16
#: ... at most: with 64 such prints the comparison took 20 ms, past the pen's 15 ms budget.
MAX_SEEN = 32
#: What one kept print is (``models.path_copy.copy_print``): a file holding another is damaged.
PRINT_SHAPE = (len(PATH_KINDS), PATH_POINTS, 2)
#: A seen file larger than this is damaged (32 prints take about 131 KB).
MAX_SEEN_BYTES = 1 << 20
#: Matched whole (``fullmatch``): ``$`` with ``match`` let "alice\n" through.
_CUSTOMER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class TemplateError(ApplianceError, RuntimeError):
    """A template could not be read or written; the message says why (never the data)."""


class TemplateUnreadable(TemplateError):
    """A customer's template file is there but cannot be read: not a template, damaged, changed on
    disk, or another customer's. Staff mend it by Replace (or Delete)."""


def validate_customer(ref: str) -> str:
    if not isinstance(ref, str) or not _CUSTOMER_RE.fullmatch(ref):
        raise ValueError("customer reference: 1-64 letters, digits, '.', '_' or '-'")
    return ref


def fsync_dir(d: Path) -> None:
    """Make a directory's entries (a rename, a link, a new file) durable."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _written_aside(path: Path, data: bytes, mode: int) -> Path:
    """``data`` in a new temporary file beside ``path``, fsynced, with exactly ``mode`` (whatever the
    umask: a broker's ACL and CRL must stay readable by the broker's user): to be moved or linked
    into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s file system (0 if it cannot be read)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


#: The name :func:`_written_aside` gives a temporary file: ``.NAME.PID.HEX.tmp``.
_LEFTOVER = re.compile(r"\..+\.[0-9]+\.[0-9a-f]{8}\.tmp")


def remove_leftovers(directory: Path) -> int:
    """Delete the temporary files a power cut left in ``directory`` mid-write (the real file is the
    previous version, intact); call at start, before anything writes there. Returns how many."""
    gone = 0
    try:
        entries = list(Path(directory).iterdir())
    except OSError:   # missing, or not ours to read (a read-only /etc): nothing of ours is there
        return 0
    for p in entries:
        if _LEFTOVER.fullmatch(p.name) and p.is_file():
            try:
                p.unlink()
                gone += 1
            except OSError as exc:
                log.warning("could not remove %s left by a power cut: %s", p, exc.strerror)
    return gone


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole."""
    tmp = _written_aside(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def load_or_create_key(path: Path, create: bool = False) -> bytes:
    path = Path(path)
    if not path.exists():
        if not create:
            raise TemplateError(f"template key {path} is missing (create it with 'sigkiosk run --config FILE --init-key --owner sigkiosk' "
                                "or set [storage] create_key = true for a first boot)")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written whole under a temporary name, then linked into place: the key file is never seen
        # empty or half-written (a power cut between create and write left a 0-byte key that
        # refused every later start, and a second process could read it before it was written;
        # found by a review). link() fails if another process made the key first: use theirs.
        tmp = _written_aside(path, secrets.token_bytes(KEY_LEN), 0o600)
        try:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            else:
                fsync_dir(path.parent)
                log.info("template key created at %s", path)
        finally:
            tmp.unlink(missing_ok=True)
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TemplateError(f"template key {path} is readable by others (mode {oct(st.st_mode & 0o777)}): chmod 600")
    key = path.read_bytes()
    if len(key) != KEY_LEN:
        raise TemplateError(f"template key {path} must hold {KEY_LEN} bytes, has {len(key)}")
    return key


@dataclass(frozen=True)
class StoredTemplate:
    customer: str
    references: tuple[Trajectory, ...]
    created_ms: int
    updated_ms: int
    version: int = 1
    #: Paper references (enrolled from pictures); empty when the customer has none.
    paper: tuple[PaperReference, ...] = ()


def _traj_arrays(prefix: str, t: Trajectory) -> dict[str, np.ndarray]:
    return {f"{prefix}x": t.x, f"{prefix}y": t.y, f"{prefix}p": t.pressure, f"{prefix}t": t.t,
            f"{prefix}d": t.pen_down, f"{prefix}g": np.asarray(t.gaps, dtype=np.int64),
            f"{prefix}b": np.asarray(t.stroke_breaks, dtype=np.int64)}


def encode_template(tpl: StoredTemplate) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    devices = []
    for i, t in enumerate(tpl.references):
        arrays.update(_traj_arrays(f"r{i}_", t))
        devices.append(asdict(t.device))
    for i, ref in enumerate(tpl.paper):
        arrays[f"q{i}_m"], arrays[f"q{i}_h"] = ref.prepared, ref.hand
    meta = {"customer": tpl.customer, "created_ms": tpl.created_ms, "updated_ms": tpl.updated_ms,
            "version": tpl.version, "devices": devices, "paper": [ref.version for ref in tpl.paper]}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)  # plain arrays only, never a pickled object
    return buf.getvalue()


def decode_template(data: bytes) -> StoredTemplate:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        refs = []
        for i, dev in enumerate(meta["devices"]):
            p = f"r{i}_"
            refs.append(Trajectory(x=z[p + "x"], y=z[p + "y"], pressure=z[p + "p"], t=z[p + "t"],
                                   pen_down=z[p + "d"], device=DeviceInfo(**dev),
                                   gaps=tuple(int(v) for v in z[p + "g"]),
                                   stroke_breaks=tuple(int(v) for v in z[p + "b"])))
        paper = tuple(PaperReference(z[f"q{i}_m"], z[f"q{i}_h"], str(v)) for i, v in enumerate(meta.get("paper", [])))
    return StoredTemplate(meta["customer"], tuple(refs), int(meta["created_ms"]), int(meta["updated_ms"]),
                          int(meta.get("version", 1)), paper)


class TemplateStore:
    """Customers' references, encrypted, one atomic file each. Thread-safe for distinct customers."""

    def __init__(self, directory: Path, key_file: Path, *, create_key: bool = False,
                 seen_signatures: int = SEEN_DEFAULT) -> None:
        if not 0 <= seen_signatures <= MAX_SEEN:
            raise ValueError(f"seen_signatures must be 0..{MAX_SEEN}, got {seen_signatures}")
        #: How many signatures' paths :meth:`remember` keeps per customer (0: none).
        self.seen_signatures = seen_signatures
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        key = load_or_create_key(key_file, create=create_key)
        self._aead = AESGCM(key)
        # A separate key for file names, derived so that the one secret covers both.
        self._name_key = hmac.new(key, b"sigkiosk template names v1", hashlib.sha256).digest()
        self._clean_temporaries()
        self._check_key()
        if seen_signatures == 0:
            # A kiosk set to keep none keeps none, also of what it kept before the setting.
            for kept in self.directory.glob(f"*{SEEN_SUFFIX}"):
                kept.unlink(missing_ok=True)

    def _check_key(self) -> None:
        # File names are keyed too, so with the wrong key every customer would look "not
        # enrolled". A small sealed marker tells a wrong key apart from an empty store.
        marker = self.directory / "key-check"
        aad = b"sigkiosk-template-key-check-v1"
        if not marker.exists():
            nonce = secrets.token_bytes(NONCE_LEN)
            atomic_write(marker, MAGIC + nonce + self._aead.encrypt(nonce, b"ok", aad))
            return
        blob = marker.read_bytes()
        try:
            self._aead.decrypt(blob[len(MAGIC):len(MAGIC) + NONCE_LEN], blob[len(MAGIC) + NONCE_LEN:], aad)
        except (InvalidTag, ValueError):
            raise TemplateError(f"the template key does not match the templates in {self.directory} "
                                "(authentication failed): wrong key file?") from None

    def _clean_temporaries(self) -> None:
        for tmp in self.directory.glob(".*.tmp"):
            # Left by a power cut mid-write: the real file is the previous version, intact.
            tmp.unlink(missing_ok=True)

    def _path(self, customer: str) -> Path:
        validate_customer(customer)
        name = hmac.new(self._name_key, customer.encode(), hashlib.sha256).hexdigest()[:32]
        return self.directory / f"{name}{SUFFIX}"

    @staticmethod
    def _aad(customer: str) -> bytes:
        return b"sigkiosk-template-v1\0" + customer.encode()

    def file_id(self, customer: str) -> str:
        """The keyed name of the customer's file: an id for derived state (``kiosk.calibration``)
        that, like the directory listing, reveals no customer reference."""
        return self._path(customer).stem

    def exists(self, customer: str) -> bool:
        return self._path(customer).exists()

    def get(self, customer: str) -> StoredTemplate | None:
        path = self._path(customer)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_LEN + 16:
            raise TemplateUnreadable(f"template file {path.name} is not a sigkiosk template")
        nonce = blob[len(MAGIC):len(MAGIC) + NONCE_LEN]
        try:
            plain = self._aead.decrypt(nonce, blob[len(MAGIC) + NONCE_LEN:], self._aad(customer))
        except InvalidTag:
            raise TemplateUnreadable(f"template file {path.name} failed authentication (wrong key, "
                                "tampered, or another customer's file)") from None
        tpl = decode_template(plain)
        if tpl.customer != customer:
            raise TemplateUnreadable(f"template file {path.name} belongs to another customer")
        return tpl

    def put(self, customer: str, references: list[Trajectory] | tuple[Trajectory, ...], *,
            over_unreadable: bool = False) -> StoredTemplate:
        """Create or replace a customer's pen references (their paper references stay).
        ``over_unreadable``: a template that cannot be read (damaged, tampered) is written over,
        its other references lost with it (a staff Replace); else its TemplateError is raised."""
        if not references:
            raise ValueError("a template needs at least one reference")
        old = self._old(customer, over_unreadable)
        # New pen references: what was kept of the signatures given against the old ones (maybe
        # someone else's, wrongly enrolled) goes with them.
        self._forget_seen(customer)
        return self._replace(customer, old, tuple(references), old.paper if old else ())

    def put_paper(self, customer: str, references: list[PaperReference] | tuple[PaperReference, ...], *,
                  over_unreadable: bool = False) -> StoredTemplate:
        """Create or replace a customer's paper references (their pen references stay); see :meth:`put`."""
        if not references:
            raise ValueError("a template needs at least one reference")
        old = self._old(customer, over_unreadable)
        if old is None or not old.references:
            self._forget_seen(customer)   # no pen references: nothing kept is ever compared
        return self._replace(customer, old, old.references if old else (), tuple(references))

    def _old(self, customer: str, over_unreadable: bool) -> StoredTemplate | None:
        try:
            return self.get(customer)
        except TemplateError:
            if not over_unreadable:
                raise
            return None

    def _replace(self, customer: str, old: StoredTemplate | None, references: tuple[Trajectory, ...],
                 paper: tuple[PaperReference, ...]) -> StoredTemplate:
        now = int(time.time() * 1000)
        tpl = StoredTemplate(customer, references, old.created_ms if old else now, now,
                             (old.version + 1) if old else 1, paper)
        self._write(tpl)
        return tpl

    def add_references(self, customer: str, references: list[Trajectory]) -> StoredTemplate:
        old = self.get(customer)
        if old is None:
            raise TemplateError("no template to add references to: enroll first")
        # The same customer's references, more of them: what was kept of their signatures stays.
        return self._replace(customer, old, (*old.references, *references), old.paper)

    def delete(self, customer: str) -> bool:
        path = self._path(customer)
        # The signatures seen first: a delete that stops half-way leaves no biometric data behind
        # a customer who is still listed (their file is deleted again by the next try).
        seen_gone = self._forget_seen(customer, sync=False)
        try:
            path.unlink()
        except FileNotFoundError:
            if seen_gone:
                fsync_dir(self.directory)
            return False
        fsync_dir(self.directory)
        return True

    def _seen_path(self, customer: str) -> Path:
        return self._path(customer).with_suffix(SEEN_SUFFIX)

    def _forget_seen(self, customer: str, *, sync: bool = True) -> bool:
        """Remove what was kept of the customer's signatures; whether there was any (``sync``:
        the directory is fsynced after, else the caller does)."""
        try:
            self._seen_path(customer).unlink()
        except FileNotFoundError:
            return False
        if sync:
            fsync_dir(self.directory)
        return True

    @staticmethod
    def _seen_aad(customer: str) -> bytes:
        return b"sigkiosk-seen-v1\0" + customer.encode()

    def seen(self, customer: str) -> tuple[np.ndarray, ...]:
        """The copy prints of the latest signatures the customer gave (oldest first; none for a
        new customer). :class:`TemplateUnreadable` when the file is damaged or not this
        customer's."""
        if self.seen_signatures == 0:
            return ()
        path = self._seen_path(customer)
        try:
            with path.open("rb") as f:
                blob = f.read(MAX_SEEN_BYTES + 1)
        except FileNotFoundError:
            return ()
        except OSError as exc:   # a directory in its place, EIO, permissions: damaged, not fatal
            raise TemplateUnreadable(f"seen file {path.name} cannot be read: {exc.strerror}") from None
        if len(blob) > MAX_SEEN_BYTES or not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_LEN + 16:
            raise TemplateUnreadable(f"seen file {path.name} is not a sigkiosk seen file")
        nonce = blob[len(MAGIC):len(MAGIC) + NONCE_LEN]
        try:
            plain = self._aead.decrypt(nonce, blob[len(MAGIC) + NONCE_LEN:], self._seen_aad(customer))
            with np.load(io.BytesIO(plain), allow_pickle=False) as z:
                paths = np.array(z["paths"], dtype=np.float64)
        except InvalidTag:
            raise TemplateUnreadable(f"seen file {path.name} failed authentication (wrong key, tampered, "
                                     "or another customer's file)") from None
        except (ValueError, KeyError, OSError) as exc:
            raise TemplateUnreadable(f"seen file {path.name} is damaged: {exc}") from None
        if paths.ndim != 4 or paths.shape[1:] != PRINT_SHAPE or len(paths) > MAX_SEEN \
                or not np.all(np.isfinite(paths)):
            raise TemplateUnreadable(f"seen file {path.name} holds prints of shape {paths.shape[1:]}, "
                                     f"not {PRINT_SHAPE}")
        return tuple(np.ascontiguousarray(p) for p in paths[-self.seen_signatures:])

    def remember(self, customer: str, print_: np.ndarray) -> int:
        """Keep the written paths of a signature the customer just gave (its copy print,
        ``models.path_copy.copy_print``; the oldest beyond :attr:`seen_signatures` dropped, and
        with 0 none kept and any kept before removed); returns how many are kept. A damaged seen
        file is started afresh. Only for an enrolled customer."""
        new = np.asarray(print_, dtype=np.float64)
        if new.shape != PRINT_SHAPE or not np.all(np.isfinite(new)):
            raise ValueError(f"a copy print is {PRINT_SHAPE} and finite, got shape {new.shape}")
        if not self._path(customer).exists():
            raise TemplateError("no template: nothing is kept of a customer who is not enrolled")
        try:
            old = self.seen(customer)
        except TemplateUnreadable as exc:
            log.error("starting the customer's seen signatures afresh: %s", exc, extra={"event": "seen_unreadable"})
            old = ()
        if self.seen_signatures == 0:
            self._seen_path(customer).unlink(missing_ok=True)
            return 0
        kept = [*old, new][-self.seen_signatures:]
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, paths=np.stack(kept).astype(np.float32))
        nonce = secrets.token_bytes(NONCE_LEN)
        atomic_write(self._seen_path(customer),
                     MAGIC + nonce + self._aead.encrypt(nonce, buf.getvalue(), self._seen_aad(customer)))
        return len(kept)

    def count(self) -> int:
        return sum(1 for _ in self.directory.glob(f"*{SUFFIX}"))

    def file_ids(self) -> set[str]:
        """The :meth:`file_id` of every customer on file."""
        return {p.stem for p in self.directory.glob(f"*{SUFFIX}")}

    def _write(self, tpl: StoredTemplate) -> None:
        nonce = secrets.token_bytes(NONCE_LEN)
        blob = MAGIC + nonce + self._aead.encrypt(nonce, encode_template(tpl), self._aad(tpl.customer))
        atomic_write(self._path(tpl.customer), blob)

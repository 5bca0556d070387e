"""The daemon's configuration: one TOML file, parsed into typed dataclasses.

Tables: ``[kiosk]`` (identity, state directory), ``[pen]`` (evdev tablet, serial pad or replay),
``[device]`` (which evdev digitizer, when a signature ends), ``[verifier]`` (threshold, model
paths), ``[policy]`` (enrollment), ``[storage]`` (template store and its key, kept apart), ``[ui]`` (the local screen), ``[link]`` (the secure link to the
central server, ``kiosk.link.LinkConfig``; omit it to run without a server) and ``[commands]``
(signed verification requests from the central server), ``[update]`` (the model-update agent,
``kiosk.update_agent.UpdateConfig``; needs ``[link]``; omit it to serve the configured model
only), ``[staff]`` (operator logins for template management, ``kiosk.staff.StaffConfig``), ``[paper]`` (photos and scans of paper signatures: the camera and the image model) and ``[profiles]`` (application profiles:
named thresholds chosen per request, ``kiosk.profiles``). Relative paths are resolved against the
configuration file's directory. The kiosk's id and site are written once, in ``[kiosk]``; the link
takes them from there (``[link] kiosk_id``/``site`` of older files: equal ones are accepted with a
warning, different ones are an error). Unknown keys are an error: a typo must not silently fall back to
a default on a bank's appliance.

``DEFAULT_CONFIG`` is a complete example (``sigkiosk run --print-config``); the demo fills it in.
"""

from __future__ import annotations

import logging
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from firmware_host.assembler import SegmenterConfig
from firmware_host.evdev_reader import DeviceSelector
from kiosk.calibration import SCALE_DEFAULTS, CalibrationConfig, ScaleDefaults
from kiosk.errors import ApplianceError
from kiosk.link import LinkConfig
from kiosk.profiles import CLASSIC_THRESHOLD_RANGE, Profiles
from kiosk.staff import StaffConfig
from kiosk.templates import MAX_SEEN, SEEN_DEFAULT
from kiosk.topics import validate_id
from kiosk.update_agent import UpdateConfig
from models.classic import ClassicConfig
from models.enrollment import EnrollmentPolicy

log = logging.getLogger(__name__)

#: The one global threshold, measured on training writers (models/classic.py, README).
DEFAULT_THRESHOLD = ClassicConfig().threshold
#: The shipped pen verifier: the match score, one calibrated genuine probability (the match rate
#: people see) from the classic DTW distance and whichever global features its model file takes.
#: The shipped model takes none: on every unseen writer of each left-out set (README "A
#: writer-independent score") no global feature transferred, so it decides as classic does.
DEFAULT_KIND = "match-score"
#: The example "high-value" profile's pen threshold on the default verifier's scale (a genuine
#: probability; the model's own operating point is 0.399, the classic distance 1.2755, and 0.6 is
#: 1.2007): on the training writers of the three larger sets it lowers skilled FAR by 0.5-2.1
#: points for 1.2-3.9 points more FRR (README, Application profiles).
HIGH_VALUE_THRESHOLD = 0.6


class ConfigError(ApplianceError, ValueError):
    """The configuration is invalid; the message names the table and key."""


DEFAULT_CONFIG = """\
# sigkiosk daemon configuration (sigkiosk run --config /etc/sigkiosk/sigkiosk.toml)

[kiosk]
# The kiosk's identity, written once: the link uses it too (its certificate's CN must be this id).
id = "kiosk-0001"
site = "branch-01"
state_dir = "/var/lib/sigkiosk"          # the only directory the service may write
# unrecorded = true                      # a bench kiosk without [link] only: nothing records its
#                                        # decisions and staff actions (its screen says so)

[pen]
source = "evdev"                         # evdev: a USB tablet ([device] says which); serial: a signature pad
#                                        # on port; replay: recordings played at real speed (no hardware)
# port = "/dev/ttyACM0"                  # serial: the pad's port (a /dev/serial/by-id/ link survives re-plugging)
# baudrate = 115200                      # serial
# recordings = "/var/lib/sigkiosk/replay" # replay: a recording, or a folder of them (sigkiosk capture synth)
# speed = 1.0                            # replay: 1.0 plays them as fast as they were written

[device]
# The pen's timing (every source), and which evdev digitizer. Unset keys match anything; name is a shell pattern.
# name = "*wacom*pen*"
# vendor = 0x056a
# path = "/dev/input/by-id/usb-Wacom_..."
input_dir = "/dev/input"
pen_up_timeout_s = 2.0                   # a signature ends this long after the last pen-up
max_duration_s = 30.0
customer_timeout_s = 120.0               # nobody signs: back to the start screen
rediscover_interval_s = 1.0              # how often to look for a re-plugged digitizer

[verifier]
kind = "@KIND@"                     # match-score (default: the classic DTW distance as one
#                                        # calibrated probability, plus the global features its model
#                                        # file takes - none shipped; models/match_score.py), classic
#                                        # (the distance itself) or fused (the match score + the learned
#                                        # model, needs model files)
threshold = @THRESHOLD@                         # classic's global threshold on the user-normalised distance
#                                        # (match-score and fused decide at their model's operating point)
rhythm_tolerance = 3.0                   # writing time this many spreads off the references: rhythm fails
rhythm_decides = false                   # true: ...and the decision is SUSPICIOUS (README: measured trade-off)
# model_dir = "/opt/sigkiosk/models"     # fused: the learned model + fused_score.json (or fusion.json)
#                                        # (default: the shipped ones);
#                                        # with [update], an installed bundle's slot replaces it

# Application profiles: named acceptance levels chosen per request - by the staff view's picker or
# `sigkiosk admin verify --profile NAME`; the customer's own request gets the default. A threshold
# left out follows [verifier] (and the site calibration); one written here stays where it is, and
# no profile is looser than the default unless it says allow_looser = true. Scales: threshold as
# [verifier] threshold (classic: the distance, lower is stricter; fused / match-score: the genuine
# probability, higher is stricter); paper_threshold: the paper model's probability (higher is stricter).
[profiles]
default = "standard"

[profiles.standard]
label = "Standard"

[profiles.high-value]
label = "High value"
threshold = @HIGH_VALUE@                          # stricter than the verifier's (a genuine probability)
paper_threshold = 0.7                    # stricter than the paper model's own (offline_fusion.json)
rhythm_decides = true                    # a pace far off the references is SUSPICIOUS on its own

[policy]
references = 5                           # signatures asked for at enrollment: "Save (n/N)"
max_enroll_attempts = 12                 # refused samples included
min_points = 40
min_duration_s = 0.4
max_duration_s = 60.0
max_inconsistency = @MAX_INCONSISTENCY@                  # refuse a sample this unlike the others (README)

[storage]
templates_dir = "templates"              # relative: under state_dir
template_key = "/etc/sigkiosk/credentials/template.key"   # AES-256 key, kept apart from the data
create_key = false                       # create the key if missing (first boot, demo)
seen_signatures = 16                     # each customer's latest signatures whose paths are kept, encrypted,
                                         # to refuse a recording of one played again; 0 keeps none

[ui]
enabled = true
host = "127.0.0.1"                       # localhost only: the kiosk browser runs on this machine
port = 8470
show_decision_s = 8.0
# The screen's event stream and API answer only the kiosk's own browser: the daemon writes a
# per-boot secret here (0640, group token_group); the sigkiosk-browser unit hands it to Chromium.
token_file = "/run/sigkiosk/ui-token"
token_group = "sigkiosk-screen"
customer_decision = "show"               # "show": APPROVED / SUSPICIOUS; "wait_for_staff": a suspicious
                                         # signature shows "Please wait, a member of staff will help you"

[staff]
# Template management (enroll, replace, add, delete) needs an operator's login on the staff view
# (/staff). Operators: sigkiosk admin operator add NAME --config /etc/sigkiosk/sigkiosk.toml
operators_file = "operators.json"        # relative: under state_dir; mode 0600, scrypt hashes
max_failures = 5                         # failed logins in a row that lock one operator...
lockout_s = 300.0                        # ...for this long
global_max_failures = 20                 # failed logins of all operators within global_window_s:
global_window_s = 60.0                   # every login refused until the window has passed
idle_timeout_s = 120.0                   # a staff session ends this long after its last action
max_session_s = 900.0

[commands]
enabled = true                           # verification requests from the central server
central_sign_pub = "/etc/sigkiosk/keys/central-sign.pub"
max_age_s = 300.0

[link]
# The secure link to the central server (id and site: [kiosk]). Omit the table to run without one.
group = "fleet"                          # the rollout group it is registered in (admin register --group):
#                                        # admin push --group fleet reaches it; without a group none does
broker_host = "mqtt.bank.example"
broker_port = 8883
ca_file = "/etc/sigkiosk/keys/ca.crt"
cert_file = "/etc/sigkiosk/keys/kiosk.crt"
key_file = "/etc/sigkiosk/keys/kiosk.key"
sign_key_file = "/etc/sigkiosk/keys/sign.key"
central_pub_file = "/etc/sigkiosk/keys/central-enc.pub"
outbox_path = "/var/lib/sigkiosk/outbox.sqlite"
evidence = true                          # seal each decision's signature (pen samples / paper crop) after
#                                        # it, for disputes; the central side keeps it its retention period
# receipts = true                        # keep each decision, staff action and evidence until a collector's
#                                        # receipt says it is stored, not only the broker's PUBACK (README
#                                        # "The secure link"); false only while the collectors are older
# receipt_wait_s = 120.0                 # no receipt this long after the broker took it: sent again, the
# receipt_wait_max_s = 3600.0            # wait doubling each time up to this

# Paper signatures (a cheque or form shown to the camera, or a scan): verified against the
# customer's references (pad references are drawn as ink). Omit the table to run without a camera.
# [paper]
# enabled = true
# camera = "/dev/video0"                 # V4L2 path or index; a video, image or folder of images replays
# warmup_s = 0.5                         # frames dropped while exposure settles
# frames = 5                             # frames grabbed per photo; the sharpest is judged
# attempts = 3                           # photos tried (each refusal tells the person what to change)
# countdown_s = 3.0                      # a countdown with a live preview before each photo: time to act on advice
# preview = true                         # the live preview (a small JPEG on the kiosk's own screen only)
# anomaly = true                         # the hand-feature Isolation Forest joins the score
# model_dir = "/opt/sigkiosk/models"     # default: the shipped CNN-LSTM, offline_fusion.json and hog_centre.npz (one folder)

# Site self-calibration (kiosk/calibration.py, README "Site self-calibration"): the threshold moves
# towards target_frr from the enrolled customers' own genuine signatures (leave-one-out), within
# shipped - max_down .. shipped + max_up; each move is logged and audited centrally; staff can
# revert it. Off by default: genuine signatures say nothing about forgeries.
# [calibration]
# enabled = true
# target_frr = 0.03
# The next three are on the verifier's score scale, with defaults per kind (kiosk/calibration.py
# SCALE_DEFAULTS): match-score's, shown, on minus the logit of the genuine probability; classic's
# on the distance (@CL_DEFAULTS@); fused's on match-score's scale (@FU_DEFAULTS@).
@MS_LINES@
# min_customers = 10                     # enrolled customers before it moves at all
# strength = 10.0                        # the shipped threshold weighs like this many customers

# The model-update agent (kiosk/UPDATES.md): signed model bundles over the link, A/B slots,
# golden-vector checks, rollback. Needs [link]. The daemon serves the active slot's model
# (kind = "fused"); a model that fails to load is reported and rolled back. Omit the table to
# serve the configured model only.
[update]
root = "/var/lib/sigkiosk/models"        # slot store (A/B slots, counter, transfers)
bundle_name = "sigkiosk-models"
admin_keys = ["/etc/sigkiosk/keys/admin1.pub", "/etc/sigkiosk/keys/admin2.pub"]   # sigkiosk admin bundle-key
threshold = 1                            # distinct admin signatures required
max_bundle_bytes = 67108864
transfer_timeout_s = 120.0
disk_reserve_bytes = 67108864            # a download leaves this much free for decisions, or is refused
golden_timeout_s = 120.0                 # one model's golden check, in a child process; longer: refused
"""


def _scale_text(d: ScaleDefaults) -> str:
    return f"max_down {d.max_down:g}, max_up {d.max_up:g}, loo_offset {d.loo_offset:g}"


# The template's measured and chosen values, from their one definition each.
for _name, _value in {
    "THRESHOLD": f"{DEFAULT_THRESHOLD:g}", "HIGH_VALUE": f"{HIGH_VALUE_THRESHOLD:g}", "KIND": DEFAULT_KIND,
    "MAX_INCONSISTENCY": repr(EnrollmentPolicy().max_inconsistency),
    "CL_DEFAULTS": _scale_text(SCALE_DEFAULTS["classic"]),
    "FU_DEFAULTS": _scale_text(SCALE_DEFAULTS["fused"]),
    "MS_LINES": "\n".join(f"# {key} = {getattr(SCALE_DEFAULTS['match-score'], key):g}".ljust(41) + f"# {why}" for key, why in (
        ("max_down", "stricter than shipped by at most this"), ("max_up", "looser by at most this"),
        ("loo_offset", 'LOO bias (README "Site self-calibration")'))),
}.items():
    DEFAULT_CONFIG = DEFAULT_CONFIG.replace(f"@{_name}@", _value)


@dataclass(frozen=True)
class DeviceConfig:
    name: str | None = None
    vendor: int | None = None
    product: int | None = None
    path: str | None = None
    phys: str | None = None
    input_dir: Path = Path("/dev/input")
    pen_up_timeout_s: float = 2.0
    max_duration_s: float = 30.0
    customer_timeout_s: float = 120.0
    rediscover_interval_s: float = 1.0

    def selector(self) -> DeviceSelector:
        return DeviceSelector(path=self.path, name=self.name, vendor=self.vendor, product=self.product, phys=self.phys)

    def segmenter(self) -> SegmenterConfig:
        return SegmenterConfig(pen_up_timeout=self.pen_up_timeout_s, max_duration=self.max_duration_s)


#: ``[pen] source``: firmware_host.pen_source.SOURCES.
PEN_SOURCES: tuple[str, ...] = ("evdev", "serial", "replay")


@dataclass(frozen=True)
class PenConfig:
    """``[pen]``: which kind of pen; its timing and the evdev device's selector stay in ``[device]``."""

    source: str = "evdev"
    port: str | None = None               # serial: the pad's serial port
    baudrate: int = 115200                # serial
    recordings: Path | None = None        # replay: a recording, or a folder of them
    speed: float = 1.0                    # replay: 1.0 = real speed

    def __post_init__(self) -> None:
        if self.source not in PEN_SOURCES:
            raise ConfigError(f"[pen] source must be one of {', '.join(PEN_SOURCES)}, got {self.source!r}")
        if self.source == "serial" and not self.port:
            raise ConfigError("[pen] source = \"serial\" needs port (the pad's serial port, e.g. \"/dev/ttyACM0\")")
        if self.source == "replay":
            if self.recordings is None:
                raise ConfigError("[pen] source = \"replay\" needs recordings (a recording or a folder of them; "
                                  "make some with: sigkiosk capture synth --out DIR)")
            from firmware_host.errors import RecordingFormatError
            from firmware_host.pen_source import recording_files

            try:   # a folder without recordings is found by `run --check`, not by the first customer
                recording_files(Path(self.recordings))
            except RecordingFormatError as exc:
                raise ConfigError(f"[pen] recordings: {exc}") from None
        if not 0.05 <= self.speed <= 100:
            raise ConfigError(f"[pen] speed must be 0.05..100, got {self.speed}")
        if self.baudrate <= 0:
            raise ConfigError(f"[pen] baudrate must be positive, got {self.baudrate}")


#: classic: DTW only; fused: learned + classic (model files); match-score: classic + global
#: features, one calibrated probability (models/match_score.py, a small JSON model).
VERIFIER_KINDS: tuple[str, ...] = ("classic", "fused", "match-score")


@dataclass(frozen=True)
class VerifierConfig:
    kind: str = DEFAULT_KIND
    threshold: float = DEFAULT_THRESHOLD
    rhythm_tolerance: float = 3.0
    rhythm_decides: bool = False
    model_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in VERIFIER_KINDS:
            raise ConfigError(f"[verifier] kind {self.kind!r} is not available (known: {', '.join(VERIFIER_KINDS)})")
        if not CLASSIC_THRESHOLD_RANGE[0] <= self.threshold <= CLASSIC_THRESHOLD_RANGE[1]:
            raise ConfigError(f"[verifier] threshold must be a classic distance in {list(CLASSIC_THRESHOLD_RANGE)} "
                              f"(a genuine signature is about 1, the shipped line {DEFAULT_THRESHOLD}), got "
                              f"{self.threshold}: a percentage?")
        if self.kind != "classic" and self.model_dir is not None and not Path(self.model_dir).is_dir():
            raise ConfigError(f"[verifier] model_dir {str(self.model_dir)!r} is not a directory "
                              f"(kind = \"{self.kind}\" loads its model from it)")


@dataclass(frozen=True)
class PolicyConfig:
    references: int = 5
    max_enroll_attempts: int = 12
    min_points: int = 40
    min_duration_s: float = 0.4
    max_duration_s: float = 60.0
    # The enrollment check's own default, measured (README, Enrollment): one definition.
    max_inconsistency: float = EnrollmentPolicy().max_inconsistency

    def __post_init__(self) -> None:
        if not 1 <= self.references <= 20:
            raise ConfigError(f"[policy] references must be 1..20, got {self.references}")
        if self.max_enroll_attempts < self.references:
            raise ConfigError("[policy] max_enroll_attempts must be at least references")

    def enrollment(self) -> EnrollmentPolicy:
        return EnrollmentPolicy(min_points=self.min_points, min_duration_s=self.min_duration_s,
                                max_duration_s=self.max_duration_s, max_inconsistency=self.max_inconsistency,
                                references=self.references)


@dataclass(frozen=True)
class StorageConfig:
    templates_dir: Path
    template_key: Path
    create_key: bool = False
    #: How many of each customer's latest signatures the kiosk keeps the written paths of, to
    #: tell a recording of one played again (``kiosk.templates``); 0 keeps none (a bank that
    #: keeps no more biometric data than the references: replays of references are still caught).
    seen_signatures: int = SEEN_DEFAULT

    def __post_init__(self) -> None:
        if not 0 <= self.seen_signatures <= MAX_SEEN:
            raise ConfigError(f"[storage] seen_signatures must be 0..{MAX_SEEN}, got {self.seen_signatures}")


@dataclass(frozen=True)
class UiConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8470
    show_decision_s: float = 8.0
    token_file: Path | None = None        # where the per-boot screen secret is written (None: memory only)
    token_group: str | None = None        # the group that may read it (the kiosk browser's user)
    customer_decision: str = "show"       # or "wait_for_staff": SUSPICIOUS is not shown to the customer

    def __post_init__(self) -> None:
        if self.customer_decision not in ("show", "wait_for_staff"):
            raise ConfigError(f"[ui] customer_decision must be \"show\" or \"wait_for_staff\", got {self.customer_decision!r}")
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError(f"[ui] host must be a loopback address (the screen is local), got {self.host!r}")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"[ui] port out of range: {self.port}")


@dataclass(frozen=True)
class PaperConfig:
    enabled: bool = False
    camera: str | int = "/dev/video0"
    warmup_s: float = 0.5
    frames: int = 5
    attempts: int = 3
    #: Seconds counted down on the screen before each photo, with the live preview: a refusal's
    #: advice ("turn on the desk light") can be acted on before the next photo is taken.
    countdown_s: float = 3.0
    #: The live preview (a downscaled JPEG of what the camera sees) on the kiosk's own screen.
    preview: bool = True
    anomaly: bool = True
    model_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.frames <= 60:
            raise ConfigError(f"[paper] frames must be 1..60, got {self.frames}")
        if not 1 <= self.attempts <= 20:
            raise ConfigError(f"[paper] attempts must be 1..20, got {self.attempts}")
        if not 0 <= self.warmup_s <= 10:
            raise ConfigError(f"[paper] warmup_s must be 0..10 s, got {self.warmup_s}")
        if not 0 <= self.countdown_s <= 30:
            raise ConfigError(f"[paper] countdown_s must be 0..30 s, got {self.countdown_s}")
        if self.model_dir is not None and not Path(self.model_dir).is_dir():
            raise ConfigError(f"[paper] model_dir {str(self.model_dir)!r} is not a directory")


@dataclass(frozen=True)
class CommandsConfig:
    enabled: bool = False
    central_sign_pub: Path | None = None
    max_age_s: float = 300.0


@dataclass(frozen=True)
class DaemonConfig:
    kiosk_id: str
    site: str
    state_dir: Path
    device: DeviceConfig
    verifier: VerifierConfig
    policy: PolicyConfig
    storage: StorageConfig
    ui: UiConfig
    commands: CommandsConfig
    link: LinkConfig | None = None
    update: UpdateConfig | None = None   # the model-update agent (needs link)
    #: ``[kiosk] unrecorded = true``: a bench kiosk without ``[link]``, whose decisions and staff
    #: actions are recorded nowhere (its screen says so). Without it a daemon needs ``[link]``.
    unrecorded: bool = False
    paper: PaperConfig = field(default_factory=PaperConfig)
    staff: StaffConfig = field(default_factory=StaffConfig)
    source: Path | None = None   # the file it was read from
    pen: PenConfig = field(default_factory=PenConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)   # site self-calibration
    profiles: Profiles = field(default_factory=Profiles)   # application profiles (kiosk.profiles)


#: Why a daemon without ``[link]`` does not start unless told it is a bench kiosk.
NOTHING_RECORDS = ("no [link]: nothing would record this kiosk's decisions and staff actions, yet its screen "
                   "would show them as final. Add [link] (the central server), or, for a bench kiosk only, set "
                   "[kiosk] unrecorded = true (its screen then says that nothing is recorded)")


def _check_type(value: Any, tp: Any, where: str) -> None:
    """A TOML value against its setting's annotation: a yes/no is a boolean (``enabled = "false"``
    read as yes), a count an integer, a number finite (a NaN made every comparison false: the
    enrollment checks, the PIN lockout and the site calibration's bounds each let everything
    through; found by a review). Other annotations (paths, tables, lists) are checked by their class."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (
        typing.Union, types.UnionType) else [tp]
    if len(args) != 1 or args[0] not in (bool, int, float, str):
        return
    want = args[0]
    if want is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r:.40}")
    if want is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where} must be a whole number, got {value!r:.40}")
    if want is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise ConfigError(f"{where} must be a finite number, got {value!r:.40}")
    if want is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r:.40}")


def _check_types(cls: type, data: Mapping[str, Any], table: str) -> None:
    """:func:`_check_type` of every key of ``data`` that is a field of ``cls`` (its own parser
    reports the others)."""
    hints = typing.get_type_hints(cls)
    for k, v in data.items():
        if k in hints:
            _check_type(v, hints[k], f"[{table}] {k}")


def _section(cls: type, data: Mapping[str, Any], table: str, base: Path, path_keys: tuple[str, ...] = ()) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"[{table}] unknown key(s): {', '.join(unknown)}")
    _check_types(cls, {k: v for k, v in data.items() if k not in path_keys}, table)
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        if k in path_keys and v is not None:
            p = Path(v)
            kwargs[k] = p if p.is_absolute() else base / p
        else:
            kwargs[k] = v
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{table}] {exc}") from None


def parse_config(data: Mapping[str, Any], base_dir: Path, source: Path | None = None) -> DaemonConfig:
    allowed = {"kiosk", "pen", "device", "verifier", "policy", "storage", "ui", "commands", "link", "update", "paper", "staff",
               "calibration", "profiles"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"unknown table(s): {', '.join(unknown)}")
    k = dict(data.get("kiosk", {}))
    try:
        kiosk_id = validate_id(str(k.pop("id")), "kiosk id")
        site = validate_id(str(k.pop("site")), "site")
        state_dir = Path(k.pop("state_dir"))
        unrecorded = k.pop("unrecorded", False)
    except KeyError as exc:
        raise ConfigError(f"[kiosk] missing key {exc.args[0]!r}") from None
    except ValueError as exc:
        raise ConfigError(f"[kiosk] {exc}") from None
    if k:
        raise ConfigError(f"[kiosk] unknown key(s): {', '.join(sorted(k))}")
    if not isinstance(unrecorded, bool):
        raise ConfigError(f"[kiosk] unrecorded must be true or false, got {unrecorded!r}")
    if not state_dir.is_absolute():
        state_dir = base_dir / state_dir
    storage = dict(data.get("storage", {}))
    if "template_key" not in storage:
        raise ConfigError("[storage] missing key 'template_key' (the template encryption key's file)")
    storage.setdefault("templates_dir", "templates")
    st = _section(StorageConfig, {**storage, "templates_dir": storage["templates_dir"]}, "storage", base_dir)
    # templates_dir is relative to the state directory, the key relative to the config file.
    tdir = st.templates_dir if Path(st.templates_dir).is_absolute() else state_dir / st.templates_dir
    kpath = Path(st.template_key)
    st = StorageConfig(templates_dir=Path(tdir), template_key=kpath if kpath.is_absolute() else base_dir / kpath,
                       create_key=bool(st.create_key), seen_signatures=st.seen_signatures)
    if st.template_key.resolve().is_relative_to(Path(st.templates_dir).resolve()):
        raise ConfigError("[storage] template_key must not live inside templates_dir: keep the key apart from the data")
    if unrecorded and "link" in data:
        raise ConfigError("[kiosk] unrecorded = true and [link]: a kiosk with a link records every decision; "
                          "remove unrecorded")
    link = None
    if "link" in data:
        link_data = dict(data["link"])
        for key, kiosk_key, value in (("kiosk_id", "id", kiosk_id), ("site", "site", site)):
            if key not in link_data:
                continue
            if link_data[key] != value:
                raise ConfigError(f"[link] {key} = {link_data[key]!r} must equal [kiosk] {kiosk_key} = {value!r}: "
                                  f"remove {key} from [link] (the link uses [kiosk] {kiosk_key})")
            log.warning("[link] %s is no longer needed: the link uses [kiosk] %s; remove it from [link]",
                        key, kiosk_key)
        link_data.update(kiosk_id=kiosk_id, site=site)
        _check_types(LinkConfig, link_data, "link")
        try:
            link = LinkConfig.from_mapping(link_data, base_dir=base_dir)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[link] {exc}") from None
    update = None
    if "update" in data:
        if link is None:
            raise ConfigError("[update] needs [link] (bundles arrive over the link)")
        u = data["update"]
        missing = [k for k in ("root", "bundle_name", "admin_keys") if k not in u]
        if missing:
            raise ConfigError(f"[update] missing key(s): {', '.join(missing)}")
        _check_types(UpdateConfig, u, "update")
        try:
            update = UpdateConfig.from_mapping(u, base_dir=base_dir)
        except (TypeError, ValueError, OSError) as exc:
            raise ConfigError(f"[update] {exc}") from None
        # Whether the key files exist and parse is sigkiosk run --check's (kiosk.check), which names
        # every missing file at once; the daemon runs the same check before it starts.
        if not 1 <= update.threshold <= len(set(update.admin_keys)):
            raise ConfigError(f"[update] threshold = {update.threshold} needs at least that many admin_keys "
                              f"(has {len(set(update.admin_keys))})")
    commands = _section(CommandsConfig, data.get("commands", {}), "commands", base_dir, ("central_sign_pub",))
    # The operators file lives in the state directory by default (the service's only writable one).
    staff = _section(StaffConfig, data.get("staff", {}), "staff", state_dir, ("operators_file",))
    if not Path(staff.operators_file).is_absolute():
        staff = replace(staff, operators_file=state_dir / staff.operators_file)
    if commands.enabled and link is not None and commands.central_sign_pub is None:
        raise ConfigError("[commands] enabled needs central_sign_pub (to check the requests' signatures)")
    verifier = _section(VerifierConfig, data.get("verifier", {}), "verifier", base_dir, ("model_dir",))
    try:
        # The classic verifier's threshold is the config's own; a fused model's is in its files.
        profiles = Profiles.from_mapping(data.get("profiles", {}), verifier.kind,
                                         verifier.threshold if verifier.kind == "classic" else None,
                                         verifier.rhythm_decides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc) if str(exc).startswith("[profiles") else f"[profiles] {exc}") from None
    return DaemonConfig(
        kiosk_id=kiosk_id, site=site, state_dir=state_dir, profiles=profiles,
        pen=_section(PenConfig, data.get("pen", {}), "pen", base_dir, ("recordings",)),
        device=_section(DeviceConfig, data.get("device", {}), "device", base_dir, ("input_dir",)),
        verifier=verifier,
        policy=_section(PolicyConfig, data.get("policy", {}), "policy", base_dir),
        storage=st, ui=_section(UiConfig, data.get("ui", {}), "ui", base_dir, ("token_file",)),
        commands=commands, link=link, update=update, source=source, staff=staff, unrecorded=unrecorded,
        paper=_section(PaperConfig, data.get("paper", {}), "paper", base_dir, ("model_dir",)),
        calibration=_calibration(data.get("calibration", {}), data.get("verifier", {}).get("kind", DEFAULT_KIND)),
    )


def _calibration(data: Mapping[str, Any], kind: str) -> CalibrationConfig:
    scaled = ("max_down", "max_up", "loo_offset")
    defaults = SCALE_DEFAULTS.get(kind)
    if defaults is not None:
        # Bounds and LOO bias on this verifier's own score scale (classic: a distance; match-score:
        # minus a logit), where the config leaves them out.
        data = {**{k: getattr(defaults, k) for k in scaled}, **data}
    cal = _section(CalibrationConfig, data, "calibration", Path("."))
    if cal.enabled and defaults is None and not set(scaled) <= set(data):
        raise ConfigError(f"[calibration] with [verifier] kind = {kind!r} needs max_down, max_up and loo_offset "
                          "on that verifier's score scale (it has no measured defaults)")
    return cal


def load_config(path: Path) -> DaemonConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse_config(data, path.parent.resolve(), source=path)


def default_config_data() -> dict[str, Any]:
    return tomllib.loads(DEFAULT_CONFIG)

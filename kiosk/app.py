"""The appliance's parts, built from its configuration: pen capture, verifiers, the secure link,
the model-update agent, the paper path and the screen.

``kiosk.daemon.Daemon`` wires these to the flows (``kiosk.flows``); this module only knows how
each part is made from ``DaemonConfig``. Imports that load something heavy (the MQTT client and
its TLS, OpenCV, the TFLite runtime) happen inside the builder that needs them, so a kiosk
without ``[link]`` or ``[paper]`` never loads them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from firmware_host.errors import RecordingFormatError
from firmware_host.evdev_reader import DigitizerService
from firmware_host.pen_source import PenService, SerialPadService, replay_service
from firmware_host.serial_pad import PadConfig
from kiosk.commands import CommandVerifier, load_central_sign_pub
from kiosk.config import ConfigError, DaemonConfig
from kiosk.link import KioskLink
from kiosk.logging_mqtt import MqttLogHandler
from kiosk.ui.server import UiServer
from kiosk.update_agent import UpdateAgent
from models.pen import make_verifier
from models.verification import PenVerifier

if TYPE_CHECKING:
    from firmware_host.camera import Camera
    from kiosk.ui.server import ScreenBackend
    from models.paper import PaperVerifier


def digitizer(config: DaemonConfig) -> PenService:
    """The pen (``[pen] source``): the evdev tablet, the serial pad or the replay, each rediscovered
    when it is plugged back. ``[device]``'s timing ends a signature the same way on all three."""
    pen, dev = config.pen, config.device
    if pen.source == "serial":
        assert pen.port is not None
        return SerialPadService(pen.port, PadConfig(baudrate=pen.baudrate, segmenter=dev.segmenter()),
                                rediscover_interval=dev.rediscover_interval_s)
    if pen.source == "replay":
        assert pen.recordings is not None
        try:
            return replay_service(pen.recordings, dev.segmenter(), speed=pen.speed)
        except RecordingFormatError as exc:   # one line at start (`sigkiosk run`), not a traceback
            raise ConfigError(f"[pen] recordings: {exc}") from None
    return DigitizerService(dev.selector(), dev.segmenter(), input_dir=dev.input_dir,
                            rediscover_interval=dev.rediscover_interval_s)


def pen_verifier(config: DaemonConfig, model_dir: Path | None = None,
                 versions: Mapping[str, str] | None = None) -> PenVerifier:
    """The ``[verifier]``; ``model_dir``/``versions``: an update bundle's model instead of the configured one."""
    vc = config.verifier
    return make_verifier(vc.kind, vc.threshold, vc.rhythm_tolerance, vc.rhythm_decides,
                         model_dir=model_dir if model_dir is not None else vc.model_dir, versions=versions)


@dataclass
class Link:
    """The secure link and the log handler that ships the kiosk's logs over it."""

    link: KioskLink
    log_handler: MqttLogHandler


def link(config: DaemonConfig, model_versions: Mapping[str, str]) -> Link:
    """``[link]``: the MQTT link to the central server (not started), its logs forwarded."""

    assert config.link is not None
    kl = KioskLink(config.link, model_versions=dict(model_versions))
    return Link(kl, MqttLogHandler(kl))


def command_verifier(config: DaemonConfig, link: KioskLink) -> CommandVerifier | None:
    """``[commands]``: checks the central server's signed verification requests; None when off."""
    cc = config.commands
    if not cc.enabled or cc.central_sign_pub is None:
        return None

    return CommandVerifier(load_central_sign_pub(cc.central_sign_pub), config.kiosk_id, link.topics,
                           config.state_dir / "commands-seen.json", cc.max_age_s)


def update_agent(config: DaemonConfig, link: KioskLink) -> UpdateAgent:
    """``[update]``: the model-update agent on the link (not started)."""

    assert config.update is not None
    return UpdateAgent.for_link(config.update, link)


def paper(config: DaemonConfig) -> tuple[PaperVerifier, Camera]:
    """``[paper]``: the paper verifier (warmed up) and the camera."""
    from firmware_host.camera import Camera
    from models.paper import PaperVerifier

    pc = config.paper
    verifier = PaperVerifier(pc.model_dir, anomaly=pc.anomaly)
    verifier.warm_up()
    source = int(pc.camera) if isinstance(pc.camera, int) or str(pc.camera).isdigit() else pc.camera
    return verifier, Camera(source, warmup_s=pc.warmup_s, frames=pc.frames)


def screen(config: DaemonConfig, backend: ScreenBackend) -> UiServer:
    """``[ui]``: the screen's web server for ``backend`` (not started)."""

    ui = config.ui
    return UiServer(backend, ui.host, ui.port, token_file=ui.token_file, token_group=ui.token_group)


def install_log_handler(handler: logging.Handler) -> Callable[[], None]:
    """Add ``handler`` to the root logger; the function returned removes and closes it."""
    logging.getLogger().addHandler(handler)

    def remove() -> None:
        logging.getLogger().removeHandler(handler)
        handler.close()

    return remove

"""Site self-calibration in the daemon (kiosk.calibration): the threshold moves within its bounds
once enough customers are enrolled, from their own genuine signatures; the move decides the next
verification, is logged and reaches the central collector's audit table (real mosquitto, real
collector and SQLite); staff revert it (the shipped threshold, held across a restart, the previous
one kept) and resume it; off, the verifier is the configured one, untouched."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from daemon_helpers import as_replayed, link_table, sign_when_asked, start_daemon, wait_idle, write_config
from fixtures_link import LinkPki, wait_for

from kiosk.errors import RequestRefused
from kiosk.staff import OperatorStore
from kiosk.templates import TemplateStore
from models.calibration import SiteThreshold
from models.classic import ClassicConfig
from tools.central.collector import Collector

SHIPPED = ClassicConfig().threshold
# The calibration's defaults are on the classic distance's scale (the shipped match score needs its own).
CLASSIC = '\n[verifier]\nkind = "classic"\n'
CALIBRATION = ("\n[calibration]\nenabled = true\nmin_customers = 3\nstrength = 0.0\ntarget_frr = 0.2\n"
               "max_down = 0.05\nmax_up = 0.04\n")


@pytest.fixture(scope="module")
def population():  # type: ignore[no-untyped-def]
    from tools.synth import make_population

    return make_population(n_writers=4, n_genuine=7, n_forgeries=1, seed=41)


def _calibration_rows(collector: Collector) -> list[dict]:
    return [r for r in collector.store.query_audit(kiosk_id="kiosk-a") if r["action"] == "calibration"]


def _enroll_directly(config_path: Path, customers: dict[str, list]) -> None:
    from kiosk.config import load_config

    config = load_config(config_path)
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = TemplateStore(config.storage.templates_dir, config.storage.template_key, create_key=True)
    for c, refs in customers.items():
        store.put(c, as_replayed(refs))


def test_moves_within_bounds_reports_centrally_and_reverts(  # type: ignore[no-untyped-def]
        population, link_pki: LinkPki, mqtt_broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kiosk.calibration")
    db = str(tmp_path / "central.sqlite")
    collector = Collector(link_pki.collector_config(mqtt_broker.port, db, fresh_session=True))
    collector.start()
    writers = sorted(population)
    link = link_table(link_pki, mqtt_broker.port, tmp_path)
    config_path = write_config(tmp_path, ui=False, link=link, extra=CLASSIC + CALIBRATION)
    # Two customers enrolled before calibration existed: they count once their references are built.
    _enroll_directly(config_path, {f"cust-{w}": list(population[w][0][:5]) for w in writers[:2]})
    daemon, pen, config = start_daemon(config_path)
    try:
        assert collector.wait_ready()
        assert isinstance(daemon.verifier, SiteThreshold)
        st = daemon.status()["calibration"]
        assert st["threshold"] == SHIPPED and st["customers"] == 0 and st["reason"] == "too_few_customers"
        for w in writers[:2]:
            daemon.pen_references.lookup(f"cust-{w}")
        # Two customers: fewer than min_customers, no move.
        assert daemon.status()["calibration"]["customers"] == 2
        assert daemon.verifier.policy.threshold == SHIPPED

        # A third customer enrolled through the pen by an operator: now it moves, within bounds.
        OperatorStore(config.staff.operators_file).set("alice", "864201")
        _, staff = daemon.staff.login("alice", "864201")
        events = daemon.bus.subscribe()
        req = daemon.submit("enroll", f"cust-{writers[2]}", staff=staff)
        sign_when_asked(daemon, pen, events, list(as_replayed(population[writers[2]][0][:7])), req.done.is_set)
        assert req.result.get("ok"), req.result
        wait_idle(daemon)
        st = daemon.status()["calibration"]
        moved = st["threshold"]
        assert st["customers"] == 3 and moved != SHIPPED
        assert SHIPPED - 0.05 <= moved <= SHIPPED + 0.04
        assert st["previous"] == SHIPPED

        # The next verification is decided at the moved threshold, and its record says so.
        enrolled = daemon.pen_references.lookup(f"cust-{writers[0]}")
        assert enrolled.verifier is daemon.verifier
        query = as_replayed(population[writers[0]][0][5:6])[0]
        verdict = enrolled.verifier.verify(enrolled.reference_set, query)
        assert verdict.approved == (verdict.distance <= moved and not verdict.too_similar)
        assert enrolled.verifier.model_versions()["site_threshold"] == f"{moved:.4g}"

        # Staff revert: the shipped threshold, the moved one kept as previous; held while staff say so.
        daemon.revert_calibration(staff)
        st = daemon.status()["calibration"]
        assert (st["threshold"], st["previous"], st["held"]) == (SHIPPED, moved, True)
        assert daemon.verifier.policy.threshold == SHIPPED and "site_threshold" not in daemon.verifier.model_versions()
        daemon.pen_references.lookup(f"cust-{writers[1]}")   # scoring again does not move a held threshold
        assert daemon.verifier.policy.threshold == SHIPPED

        assert daemon.link.flush(30)
        want = [("kiosk", "auto", f"{SHIPPED:.4f}->{moved:.4f} n=3"),
                ("alice", "revert", f"{moved:.4f}->{SHIPPED:.4f} n=3 held")]
        wait_for(lambda: len(_calibration_rows(collector)) >= 2, 20)
        rows = _calibration_rows(collector)
        assert [(r["operator"], r["mode"], r["outcome"]) for r in rows] == want
        moves = [r for r in caplog.records if getattr(r, "event", None) == "calibration_moved"]
        assert [(r.previous, r.threshold) for r in moves] == [(SHIPPED, moved), (moved, SHIPPED)]
    finally:
        daemon.stop()
        pen.close_all()

    # Held across a restart; resumed by staff, it returns to the site's threshold from the stored scores.
    daemon, pen, config = start_daemon(config_path)
    try:
        assert daemon.verifier.policy.threshold == SHIPPED and daemon.status()["calibration"]["held"]
        _, staff = daemon.staff.login("alice", "864201")
        daemon.resume_calibration(staff)
        st = daemon.status()["calibration"]
        assert (st["threshold"], st["held"], st["customers"]) == (moved, False, 3)
        assert daemon.link.flush(30)
        wait_for(lambda: len(_calibration_rows(collector)) >= 3, 20)
        last = _calibration_rows(collector)[-1]
        want_last = ("alice", "resume", f"{SHIPPED:.4f}->{moved:.4f} n=3")
        assert (last["operator"], last["mode"], last["outcome"]) == want_last
    finally:
        daemon.stop()
        pen.close_all()
        collector.stop()


def test_off_by_default_the_verifier_is_untouched(population, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon, pen, config = start_daemon(write_config(tmp_path, extra=CLASSIC))
    try:
        assert not config.calibration.enabled
        assert not isinstance(daemon.verifier, SiteThreshold) and daemon.verifier.policy.threshold == SHIPPED
        assert daemon.status()["calibration"] is None
        OperatorStore(config.staff.operators_file).set("alice", "864201")
        _, staff = daemon.staff.login("alice", "864201")
        with pytest.raises(RequestRefused, match="not enabled"):
            daemon.revert_calibration(staff)
        assert not (config.state_dir / "calibration.json").exists()
    finally:
        daemon.stop()
        pen.close_all()


def test_config_refuses_calibration_out_of_scale(tmp_path: Path) -> None:
    from kiosk.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"\[calibration\] target_frr"):
        load_config(write_config(tmp_path, extra="\n[calibration]\ntarget_frr = 0.7\n"))
    # Every verifier kind gets bounds and LOO bias on its own score scale where the config leaves
    # them out (the fused score's since its model became the match score's); what the config
    # writes wins; a kind without measured defaults would have to write all three.
    from kiosk.calibration import SCALE_DEFAULTS

    fu = load_config(write_config(tmp_path, extra='\n[verifier]\nkind = "fused"\n' + CALIBRATION)).calibration
    assert (fu.max_down, fu.max_up, fu.loo_offset) == (0.05, 0.04, SCALE_DEFAULTS["fused"].loo_offset)
    from kiosk.config import VERIFIER_KINDS

    assert set(SCALE_DEFAULTS) == set(VERIFIER_KINDS)

    ms = load_config(write_config(tmp_path, extra="\n[calibration]\nenabled = true\n")).calibration
    assert (ms.max_down, ms.max_up, ms.loo_offset) == (0.9, 1.0, SCALE_DEFAULTS["match-score"].loo_offset)
    cl = load_config(write_config(tmp_path, extra=CLASSIC + "\n[calibration]\nenabled = true\nmax_up = 0.2\n")).calibration
    assert (cl.max_down, cl.max_up, cl.loo_offset) == (0.10, 0.2, SCALE_DEFAULTS["classic"].loo_offset)


def test_a_probability_verifiers_moves_are_audited_as_probabilities(population, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The match score decides on minus a logit; staff and auditors read its thresholds as the
    probabilities the profiles are written in, so the audit outcome says "p" and gives those."""
    import math

    from kiosk.calibration import SCALE_DEFAULTS, CalibrationConfig, SiteCalibration
    from models.pen import make_verifier

    d = SCALE_DEFAULTS["match-score"]
    config = CalibrationConfig(enabled=True, min_customers=3, strength=0.0, target_frr=0.2, max_down=d.max_down,
                               max_up=d.max_up, loo_offset=d.loo_offset)
    store = TemplateStore(tmp_path / "templates", tmp_path / "template.key", create_key=True)
    outcomes: list[str] = []
    cal = SiteCalibration(config, tmp_path, store, lambda outcome, *_: outcomes.append(outcome))
    inner = make_verifier("match-score", 0.0)
    site = SiteThreshold(inner)
    cal.attach(site)
    for w in sorted(population)[:3]:
        store.put(f"cust-{w}", population[w][0][:5])
        cal.customer_changed(f"cust-{w}")
    st = cal.status()
    assert st["scale"] == "probability" and st["customers"] == 3
    moved = outcomes[-1]
    assert moved.startswith("p ") and moved.endswith(" n=3"), moved
    before, after = (float(x) for x in moved[2:].split(" ")[0].split("->"))
    prob = 1.0 / (1.0 + math.exp(site.threshold))
    assert 0.0 < after < 1.0 and after == pytest.approx(prob, abs=1e-4) == st["threshold"]
    assert before == pytest.approx(1.0 / (1.0 + math.exp(site.shipped)), abs=1e-4)


def test_a_kind_without_measured_defaults_must_write_its_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounds and LOO bias are on each verifier's own score scale: a kind with no measured defaults
    (a future verifier; until 2026-11-27 the fused one) is refused unless the config writes all three."""
    import kiosk.calibration
    from kiosk.config import ConfigError, load_config

    monkeypatch.delitem(kiosk.calibration.SCALE_DEFAULTS, "fused")
    fused = '\n[verifier]\nkind = "fused"\n'
    with pytest.raises(ConfigError, match="needs max_down, max_up and loo_offset"):
        load_config(write_config(tmp_path, extra=fused + CALIBRATION))
    cal = load_config(write_config(tmp_path, extra=fused + CALIBRATION + "loo_offset = 0.3\n")).calibration
    assert (cal.max_down, cal.max_up, cal.loo_offset) == (0.05, 0.04, 0.3)


def test_customers_deleted_behind_its_back_do_not_move_the_threshold(population, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Found by a review: scores of customers deleted while the calibration was off (or just before
    a power cut: the template's delete is durable before the calibration's file is saved) stayed
    in calibration.json and moved the threshold at the next start, from an empty store to its bound."""
    from kiosk.calibration import SCALE_DEFAULTS, CalibrationConfig, SiteCalibration
    from models.pen import make_verifier

    d = SCALE_DEFAULTS["classic"]
    config = CalibrationConfig(enabled=True, min_customers=3, strength=0.0, target_frr=0.2, max_down=d.max_down,
                               max_up=d.max_up, loo_offset=d.loo_offset)
    store = TemplateStore(tmp_path / "templates", tmp_path / "template.key", create_key=True)
    cal = SiteCalibration(config, tmp_path, store, lambda *_: None)
    cal.attach(SiteThreshold(make_verifier("classic", 0.0)))
    for w in sorted(population)[:4]:
        store.put(f"cust-{w}", population[w][0][:5])
        cal.customer_changed(f"cust-{w}")
    assert cal.status()["customers"] == 4
    for w in sorted(population)[:4]:   # deleted behind its back: the templates go, its file stays
        store.delete(f"cust-{w}")
    again = SiteCalibration(config, tmp_path, store, lambda *_: None)
    site = SiteThreshold(make_verifier("classic", 0.0))
    again.attach(site)
    assert again.status()["customers"] == 0 and site.threshold == site.shipped

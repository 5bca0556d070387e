"""The evaluator's operating point decides with the daemon's own decision policy (issue 12, item 5)."""

from __future__ import annotations

from pathlib import Path

from firmware_host.replay_pen import ReplayPen
from kiosk.config import load_config
from kiosk.daemon import Daemon
from models import DecisionPolicy, Trajectory
from tools import operating_point
from tools.datasets.types import Dataset, Label, OnlineSample
from tools.synth import make_population

CONFIG = """[kiosk]
id = "kiosk-a"
site = "site1"
state_dir = "state"

[storage]
template_key = "credentials/template.key"
create_key = true

[ui]
enabled = false

[verifier]
kind = "classic"
threshold = 1.25
rhythm_decides = true
rhythm_tolerance = 2.5
"""


def _dataset(pop: dict[str, tuple[list[Trajectory], list[Trajectory]]]) -> Dataset[OnlineSample]:
    writers = {
        w: [OnlineSample(w, Label.GENUINE, t, Path(f"{w}-g{i}"), i) for i, t in enumerate(g)]
        + [OnlineSample(w, Label.SKILLED, t, Path(f"{w}-f{i}"), i) for i, t in enumerate(f)]
        for w, (g, f) in pop.items()
    }
    return Dataset("synth", writers)


def test_operating_point_uses_the_daemons_policy(tmp_path: Path) -> None:
    (tmp_path / "sigkiosk.toml").write_text(CONFIG)
    config = load_config(tmp_path / "sigkiosk.toml")
    daemon = Daemon(config, digitizer=ReplayPen().service(config.device.segmenter()))
    ours = operating_point.kiosk_verifier(config.verifier)
    # The same class, the same policy (threshold, copy check, rhythm rule, rate mapping), the same
    # recorded versions: what the evaluator measures is what this kiosk decides.
    assert type(ours) is type(daemon.verifier)
    assert type(ours.policy) is DecisionPolicy
    assert ours.policy == daemon.verifier.policy
    assert ours.policy.threshold == 1.25 and ours.policy.rhythm_decides and ours.policy.rhythm_tolerance == 2.5
    assert ours.model_versions() == daemon.verifier.model_versions()

    # measure() counts exactly the daemon verifier's decisions on the same references.
    pop = make_population(n_writers=2, n_genuine=9, n_forgeries=3, seed=11)
    op = operating_point.measure(_dataset(pop), daemon.verifier, references=5, questioned=4)
    rejected = accepted = 0
    for genuine, forged in pop.values():
        refs = daemon.verifier.enroll(genuine[:5])
        rejected += sum(not daemon.verifier.verify(refs, q).approved for q in genuine[5:9])
        accepted += sum(daemon.verifier.verify(refs, q).approved for q in forged)
    assert (op.genuine, op.forged) == (8, 6)
    assert (op.rejected, op.accepted) == (rejected, accepted)


def test_by_default_it_measures_the_shipped_match_score(tmp_path: Path) -> None:
    """Without ``[verifier]`` the kiosk runs the match score; the evaluator's default is the same
    verifier with the same policy (the model's operating point, not the classic distance)."""
    from kiosk.config import VerifierConfig
    from models.match_verifier import MatchScoreVerifier

    (tmp_path / "sigkiosk.toml").write_text(CONFIG.split("[verifier]")[0])
    config = load_config(tmp_path / "sigkiosk.toml")
    daemon = Daemon(config, digitizer=ReplayPen().service(config.device.segmenter()))
    ours = operating_point.kiosk_verifier(VerifierConfig())
    assert type(ours) is type(daemon.verifier) is MatchScoreVerifier
    assert ours.policy == daemon.verifier.policy and ours.model_versions() == daemon.verifier.model_versions()
    assert 0.0 < ours.model.threshold < 1.0

"""A kiosk process for the update crash tests: KioskLink + UpdateAgent, killable at any step.

    python update_kiosk_proc.py LINK.json UPDATE.json [CRASH_STEP [AFTER_N]]

With CRASH_STEP, the agent SIGKILLs its own process the AFTER_N-th time (default 1) it reaches
that step (``chunk_stored``, ``staged``, ``slot_written``, ``before_switch``, ``after_switch``):
a real, unannounced death, exactly there. Prints ``ready`` once subscribed, then each state.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kiosk.link import KioskLink, LinkConfig
from kiosk.update_agent import UpdateAgent, UpdateConfig


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    link_cfg, upd_cfg = sys.argv[1], sys.argv[2]
    crash_step = sys.argv[3] if len(sys.argv) > 3 else None
    after_n = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    seen = {"n": 0}

    def hook(step: str, details: Mapping[str, Any]) -> None:
        print(f"step {step} {json.dumps(dict(details))}", flush=True)
        if step == crash_step:
            seen["n"] += 1
            if seen["n"] >= after_n:
                os.kill(os.getpid(), signal.SIGKILL)

    link = KioskLink(LinkConfig.from_mapping(json.loads(Path(link_cfg).read_text())))
    agent = UpdateAgent.for_link(UpdateConfig.from_mapping(json.loads(Path(upd_cfg).read_text())), link, step_hook=hook)
    agent.start()
    link.start()
    link.commands_ready.wait(30)
    print("ready", flush=True)
    last = None
    try:
        while True:
            state = agent.last_state
            key = (state.get("seq"), state.get("state"))
            if key != last:
                last = key
                print(f"state {json.dumps(state, sort_keys=True)}", flush=True)
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        agent.close()
        link.close()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sys.exit(main())

"""A kiosk process for the crash tests: publishes decisions through KioskLink, printing each one
once publish_decision has returned (i.e. once it is committed to the outbox).

    python link_kiosk_proc.py CONFIG.json START COUNT DELAY_S

The test SIGKILLs it mid-stream, then starts it again; everything it printed must reach the
database exactly once.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from kiosk.link import KioskLink, LinkConfig


def main() -> int:
    cfg_path, start, count, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    link = KioskLink(LinkConfig.from_mapping(json.loads(Path(cfg_path).read_text())))
    link.start()
    for i in range(start, start + count):
        seq = link.publish_decision({"decision": "APPROVED", "score": 0.9, "subject": f"n{i}"})
        print(f"committed {i} {seq}", flush=True)
        if delay:
            time.sleep(delay)
    ok = link.flush(60)
    print("drained" if ok else "not drained", flush=True)
    link.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

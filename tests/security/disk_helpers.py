"""A real, deliberately tiny file system for the full-disk attacks (tmpfs; the tests run as root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def tiny_tmpfs(mnt: Path, size: str = "1m", *, uid: int | None = None, gid: int | None = None) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``mnt`` (created if missing) for the duration of the block."""
    mnt.mkdir(parents=True, exist_ok=True)
    opts = f"size={size},mode=0700" + (f",uid={uid}" if uid is not None else "") + (f",gid={gid}" if gid is not None else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_disk(directory: Path, leave: int = 0) -> Path:
    """Take every free byte of ``directory``'s file system but ``leave``; delete the file returned
    to give the space back."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 1):   # big writes stop short of the last bytes: then smaller
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
        if leave:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    return filler

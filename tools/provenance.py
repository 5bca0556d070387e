"""Where a result came from: the command that made it, the commit of the code, and the SHA-256 of
every model file it used. Run records (training) and evaluation reports carry these, so a figure
in a README can be traced back to what produced it and checked against the files in hand."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

#: The argument list :func:`tools.cli.main` was called with (also when called in-process, where
#: ``sys.argv`` is the caller's, not the command's).
_argv: list[str] | None = None


def set_command(argv: Sequence[str]) -> None:
    """Remember the ``sigkiosk`` arguments being run (called by :func:`tools.cli.main`)."""
    global _argv
    _argv = list(argv)


def invoked_command() -> str:
    """The command line that is running, for a record (``sigkiosk ...`` and ``python -m tools.cli
    ...`` are the same command)."""
    if _argv is not None:
        return " ".join(["sigkiosk", *_argv])
    if sys.argv and (sys.argv[0].endswith("sigkiosk") or sys.argv[0].endswith("cli.py")):
        return "sigkiosk " + " ".join(sys.argv[1:])
    return " ".join(sys.argv)


def git_commit(where: Path | None = None) -> str | None:
    """The commit of the checkout holding ``where`` (default: this code), with ``-dirty`` when
    tracked files differ from it; ``None`` outside a git checkout (an installed wheel) or without git."""
    cwd = where or Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=cwd, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, cwd=cwd, timeout=10).stdout.strip()
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    return head + ("-dirty" if dirty else "") if head else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_hashes(paths: Iterable[Path]) -> dict[str, str]:
    """``{path: sha256}`` of each model file that exists (a model's config and fusion included by the caller)."""
    return {str(p): sha256(p) for p in paths if Path(p).is_file()}


def provenance(models: Iterable[Path] = ()) -> dict:
    """What a report records about its making."""
    return {"command": invoked_command(), "git_commit": git_commit(), "models_sha256": model_hashes(models)}

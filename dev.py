#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3 installed.

    python3 dev.py bench    # the main job: the default (quick) sweep and its report
    python3 dev.py test     # the test suite (what CI runs)
    python3 dev.py lint     # ruff
    python3 dev.py shell    # print how to activate the environment

The first call makes ``.venv`` and installs the project with its bench, test
and notebook extras (faster-fifo too where a wheel installs); later calls
reuse it until ``pyproject.toml`` changes.  Arguments after the command go
to the tool it runs, e.g. ``python3 dev.py test -k naming`` or
``python3 dev.py bench --out results/mine``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".turbo-queue-installed"


def _run(cmd: list[str], **kw) -> int:
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, **kw)


def ensure_env() -> None:
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and STAMP.exists() and STAMP.read_text() == want:
        return
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if _run([*pip, "--upgrade", "pip"]) != 0:
        sys.exit("dev.py: could not upgrade pip")
    # faster-fifo is an optional peer backend: the bench skips it with a
    # warning where it cannot be installed, so a failure here is not fatal.
    if _run([*pip, "-e", ".[bench,test,notebooks,lint,fifo,kafka]"]) != 0:
        print("dev.py: installing without the optional faster-fifo backend", flush=True)
        if _run([*pip, "-e", ".[bench,test,notebooks,lint]"]) != 0:
            sys.exit("dev.py: installing the project failed")
    STAMP.write_text(want)


def record_commit() -> None:
    """Write the checkout's commit to .git_commit, for result sets made from a copy without .git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return
    if out.returncode == 0 and out.stdout.strip():
        (ROOT / ".git_commit").write_text(out.stdout.strip() + "\n")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    ensure_env()
    record_commit()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if command == "test":
        return _run([PY, "-m", "pytest", *rest], env=env)
    if command == "bench":
        return _run([PY, "-m", "bench", "run", *rest], env=env)
    if command == "lint":
        return _run([PY, "-m", "ruff", "check", "turbo_queue", "bench", "tests", *rest], env=env)
    if command == "shell":
        print(f"source {VENV}/bin/activate")
        return 0
    print(f"dev.py: unknown command {command!r}; use bench, test, lint or shell", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

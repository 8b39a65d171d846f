"""A queue folder shared by a group: docs/security.md's recipe, run as two real users.

A producer and a consumer run as two different uids that share one group,
on a ``2770`` setgid folder with the json serializer.  Both run with umask
077, the strictest a service commonly has: batch files must still be
readable by the group, because their mode comes from the folder.

The two-user test needs root (to switch uids); elsewhere it is skipped with
that reason.  The file modes are checked without root too.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import pytest

import turbo_queue

pytestmark = pytest.mark.usefixtures("reap_children")
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="needs root to run a producer and a consumer as two different users")

REPO = Path(__file__).resolve().parent.parent
GROUP = 12350  # the group both users share
PRODUCER_UID, CONSUMER_UID = 12345, 12346  # each with a private primary group of the same number


def _as_user(uid: int):
    def switch() -> None:
        os.setgroups([GROUP])
        os.setgid(uid)
        os.setuid(uid)
        os.umask(0o077)
    return switch


def _run_as(uid: int, python: str, script: str) -> subprocess.CompletedProcess:
    prelude = f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
    return subprocess.run([python, "-c", prelude + textwrap.dedent(script)], preexec_fn=_as_user(uid),
                          capture_output=True, text=True, timeout=60, cwd="/", env={"PATH": "/usr/bin:/bin"})


def _python_for_other_users() -> str:
    """An interpreter (3.11+, for sqlite3 serialize) that an unprivileged uid can run."""
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), shutil.which("python3") or "",
                  f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}", "/usr/bin/python3"]
    why = []
    for python in dict.fromkeys(c for c in candidates if c):
        try:
            probe = _run_as(PRODUCER_UID, python, "import sqlite3; assert sys.version_info >= (3, 11)")
        except (OSError, subprocess.SubprocessError) as exc:
            why.append(f"{python}: {exc}")
            continue
        if probe.returncode == 0:
            return python
        why.append(f"{python}: {probe.stderr.strip().splitlines()[-1:] or probe.returncode}")
    pytest.skip("no Python 3.11+ that another uid can run here (" + "; ".join(why) + ")")


@pytest.fixture
def shared_parent():
    # Not tmp_path: pytest makes its base folder 0700 for root, so the other
    # users could not reach a folder under it.  Removed afterwards.
    parent = tempfile.mkdtemp(prefix="tq-group-")
    os.chmod(parent, 0o711)
    yield Path(parent)
    shutil.rmtree(parent, ignore_errors=True)


@needs_root
def test_producer_and_consumer_of_two_users_share_a_setgid_group_folder(shared_parent):
    python = _python_for_other_users()
    folder = shared_parent / "queue"
    # The recipe of docs/security.md: a folder of the common group, mode 2770.
    folder.mkdir()
    os.chown(folder, 0, GROUP)
    os.chmod(folder, 0o2770)
    items = [{"n": i, "text": f"event {i}"} for i in range(7)]

    produced = _run_as(PRODUCER_UID, python, f"""
        import turbo_queue
        q = turbo_queue.Queue({str(folder)!r}, batch_size=3, serializer="json")
        with q.producer() as p:
            p.put_many({items!r}[:6])
            p.put({items[6]!r})
    """)
    assert produced.returncode == 0, produced.stderr
    batches = sorted(folder.glob("r_*.tqb"))
    assert len(batches) == 3
    for batch in batches:
        st = batch.stat()
        # Group read and write from the folder, despite umask 077; never others.
        assert stat.S_IMODE(st.st_mode) == 0o660, f"{batch.name}: {stat.S_IMODE(st.st_mode):o}"
        assert st.st_uid == PRODUCER_UID and st.st_gid == GROUP  # setgid: the folder's group

    consumed = _run_as(CONSUMER_UID, python, f"""
        import json, turbo_queue
        q = turbo_queue.Queue({str(folder)!r}, serializer="json")
        q.close()
        with q.consumer() as c:
            print(json.dumps(list(c)))
    """)
    assert consumed.returncode == 0, consumed.stderr
    assert json.loads(consumed.stdout) == items
    with pytest.warns(UserWarning, match="writable by other users"):  # as docs/security.md says
        stats = turbo_queue.Queue(folder, serializer="json").stats()
    assert stats["ready"]["batches"] == stats["claimed"]["batches"] == stats["aside"] == 0


def test_batch_files_take_the_folders_group_access_never_others(tmp_path):
    modes = {0o700: 0o600, 0o750: 0o640, 0o2770: 0o660, 0o777: 0o660, 0o705: 0o600}
    old = os.umask(0)  # the umask neither widens nor narrows them: the folder decides
    try:
        for folder_mode, file_mode in modes.items():
            folder = tmp_path / f"q{folder_mode:o}"
            folder.mkdir()
            os.chmod(folder, folder_mode)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "writable by other users", as documented
                q = turbo_queue.Queue(folder, batch_size=1, serializer="json")
            with q.producer() as p:
                p.put("x")
            (batch,) = folder.glob("r_*.tqb")
            got = stat.S_IMODE(batch.stat().st_mode)
            assert got == file_mode, f"folder {folder_mode:o}: batch {got:o}, expected {file_mode:o}"
    finally:
        os.umask(old)


def test_aside_and_dead_take_the_folders_group_access_never_others(tmp_path):
    """Whoever makes aside/ or dead/ first, the group's other users can still use them."""
    folder = tmp_path / "q"
    folder.mkdir()
    os.chmod(folder, 0o2770)
    old = os.umask(0o077)  # a strict service umask must not shut the group out
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "writable by other users", as documented
            q = turbo_queue.Queue(folder, batch_size=1, serializer="json", max_deliveries=1, max_batch_age=None)
        (folder / "r_0000_stray.tqb").write_bytes(b"not a batch")  # sorts first: set aside first
        with q.producer() as p:
            p.put("poison")
        with q.consumer() as c:
            with pytest.raises(RuntimeError), c.batch(timeout=5):
                raise RuntimeError("handler failed")
        assert q.stats()["dead"]["batches"] == 1
    finally:
        os.umask(old)
    for sub in ("aside", "dead"):
        mode = stat.S_IMODE((folder / sub).stat().st_mode)
        assert mode == 0o2770, f"{sub}/: {mode:o}, expected 2770 (the folder's group access and setgid)"

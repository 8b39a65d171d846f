"""Leases: claims and loading files of owners whose liveness cannot be checked from here.

An owner token names the kernel and PID namespace of its process.  Recovery
checks an owner of its own namespace by pid at once; any other owner (another
PID namespace, another host, a token of an older version) is taken for gone
only once its file was not renewed for ``lease_timeout`` seconds.  Mtimes are
set with ``os.utime`` to make a lease lapse, instead of waiting for it.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _workers as w
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import turbo_queue
from turbo_queue import _lease, _naming
from turbo_queue.__main__ import main as cli

pytestmark = pytest.mark.usefixtures("reap_children")

WORKER = Path(__file__).resolve().parent / "_lease_worker.py"
# The owner grammar of earlier versions, as they parse it.
OLD_OWNER_RE = re.compile(r"^(?P<host>[A-Za-z0-9.-]+)-(?P<pid>[0-9]+)-(?P<start>[0-9a-f]+)-(?P<nonce>[0-9a-f]{8})$")


def once(ready: str) -> str:
    """``ready`` as recovery returns it: one delivery without an ack counted in its name."""
    return _naming.parse_batch_name(ready).with_deliveries(1).name(_naming.READY)


def age(path: Path | str, seconds: float) -> None:
    """Make ``path`` look last renewed ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def claimed_files(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(_naming.CLAIMED))


def put_batch(q, items) -> str:
    with q.producer() as p:
        p.put_many(items)
    (ready,) = [n for n in os.listdir(q.path) if _naming.is_ready_name(n)]
    return ready


# -- the owner token ----------------------------------------------------------------


def test_owner_names_this_kernel_and_pid_namespace():
    owner = _naming.make_owner()
    ns = _naming.local_namespace()
    if ns is None:
        pytest.skip("no /proc/self/ns/pid or boot_id here: the namespace is unknown")
    assert re.fullmatch(r"[0-9a-f]{8}", ns)
    assert owner.ns == ns
    assert f"..{ns}-" in str(owner)
    assert _naming.Owner.parse(str(owner)) == owner
    assert owner.is_alive() is True
    # The same pid and start time in another namespace is not this process.
    assert dataclasses.replace(owner, ns="%08x" % (int(ns, 16) ^ 1)).is_alive() is None


@pytest.mark.parametrize("token, fields", [
    ("myhost-123-4f-0badf00d", ("myhost", 123, 0x4F, "0badf00d")),
    ("node-7-1234-1a2b3c4d-0badf00d", ("node-7", 1234, 0x1A2B3C4D, "0badf00d")),
    ("a.b.example.com-1-0-00000000", ("a.b.example.com", 1, 0, "00000000")),
])
def test_old_grammar_tokens_parse_with_namespace_unknown(token, fields):
    host, pid, start, nonce = fields
    owner = _naming.Owner.parse(token)
    assert owner == _naming.Owner(host, pid, start, nonce, None)
    assert str(owner) == token  # written back exactly as found
    ready = f"r_00000000000000000005_000000000001_3_{token}.tqb"
    assert _naming.parse_batch_name(ready).owner == owner
    claimed = _naming.parse_claimed_name(f"c_{token}__{ready}")
    assert claimed.owner == owner and claimed.ready_name == ready


def test_old_token_of_this_host_is_checked_conservatively():
    me = _naming.make_owner()
    old_me = _naming.Owner(_naming.local_host(), me.pid, me.start, me.nonce, None)
    # Alive here: never taken (an older version's consumer does not renew a lease).
    assert old_me.is_alive() is True
    old_dead = _naming.Owner(_naming.local_host(), w.dead_pid(), 0, "deadbeef", None)
    expected = False if _naming.local_namespace() is None else None
    assert old_dead.is_alive() is expected  # maybe a live process of another namespace: the lease decides
    assert _naming.Owner("elsewhere", me.pid, me.start, me.nonce, None).is_alive() is None


def test_new_tokens_read_as_a_foreign_host_by_earlier_versions():
    owner = _naming.make_owner()
    if owner.ns is None:
        pytest.skip("no namespace here: the token keeps the old grammar")
    m = OLD_OWNER_RE.match(str(owner))
    assert m is not None  # their names still parse there: never set aside as bad names
    assert m["host"] != _naming.local_host()  # and their files are left alone there


@settings(deadline=None)
@given(st.text(max_size=80))
def test_sanitized_host_never_holds_the_namespace_marker(host):
    safe = _naming.sanitize_host(host)
    assert ".." not in safe
    owner = _naming.Owner(safe, 1, 2, "0000000a", None)
    assert _naming.Owner.parse(str(owner)) == owner


def test_claimed_names_stay_within_name_max(monkeypatch):
    monkeypatch.setattr(_naming, "_local_host", "h" * 64)  # HOST_NAME_MAX
    owner = dataclasses.replace(_naming.make_owner(), pid=2**22, start=2**44)
    if owner.ns is None:
        pytest.skip("no namespace here: the token keeps the old grammar")
    assert owner.host == "h" * 54
    assert _naming.Owner.parse(str(owner)) == owner
    ready = _naming.BatchName(_naming.READY, 10**20 - 1, 10**12 - 1, 10**9, owner).name()
    assert len(_naming.claimed_name(owner, ready).encode()) <= 255


# -- recovery by lease ----------------------------------------------------------------


def test_other_host_files_recovered_only_after_their_lease(tmp_path, caplog):
    q = turbo_queue.Queue(tmp_path / "q", max_batch_age=None, lease_timeout=60)
    remote = _naming.Owner("some-other-host", 1234, 0, "0badf00d", "12345678")
    items = ["a", "b"]
    loading = w.write_batch_file(q.path, _naming.LOADING, items, remote)
    ready = _naming.BatchName(_naming.READY, 5, 1, 1, remote).name()
    claimed = _naming.claimed_name(remote, ready)
    (q.path / claimed).write_bytes(w.batch_bytes(["c"], owner=str(remote)))

    report = q.recover()
    assert not report
    assert report.remote == 2 and sorted(report.leased) == sorted([loading, claimed])
    age(q.path / loading, 59)
    age(q.path / claimed, 59)
    assert sorted(q.recover().leased) == sorted([loading, claimed])  # a second short of the lease

    age(q.path / loading, 61)
    age(q.path / claimed, 61)
    with caplog.at_level("WARNING", logger="turbo_queue"):
        report = q.recover()
    lapsed = [r.getMessage() for r in caplog.records if "lapsed" in r.getMessage()]
    assert len(lapsed) == 2 and all("some-other-host" in m for m in lapsed)
    assert report.returned == [once(ready)]
    assert report.sealed == [_naming.parse_batch_name(loading).name(_naming.READY)]
    assert report.leased == []
    assert sorted(_drain(q)) == ["a", "b", "c"]


def _drain(q) -> list:
    got = []
    with q.consumer() as c:
        while True:
            try:
                got.extend(c.get_batch(timeout=0))
            except turbo_queue.Empty:
                return got


def test_old_token_files_recovered_after_their_lease(tmp_path):
    """Files written by an earlier version: the namespace is unknown, so the lease decides."""
    if _naming.local_namespace() is None:
        pytest.skip("no namespace here: old tokens are checked by pid as before")
    q = turbo_queue.Queue(tmp_path / "q", max_batch_age=None, lease_timeout=60)
    old = _naming.Owner(_naming.local_host(), w.dead_pid(), 0, "deadbeef", None)
    ready = _naming.BatchName(_naming.READY, 5, 1, 1, old).name()
    claimed = _naming.claimed_name(old, ready)
    assert _naming.parse_claimed_name(claimed).owner.ns is None  # the old grammar
    (q.path / claimed).write_bytes(w.batch_bytes(["x"], owner=str(old)))
    assert q.recover().leased == [claimed]
    age(q.path / claimed, 3600)  # left by a version that ran an hour ago
    assert q.recover().returned == [once(ready)]


@pytest.mark.timeout(60)
def test_same_namespace_dead_owner_recovered_at_once(tmp_path):
    """A consumer of this namespace that died: its pid says so, no lease is waited for."""
    q = turbo_queue.Queue(tmp_path / "q", max_batch_age=None, lease_timeout=3600)
    ready = put_batch(q, [1, 2, 3])
    marker = tmp_path / "claimed"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            c = q.consumer()
            w.write_result(marker, (c.get_batch(timeout=10), str(c._owner)))
        finally:
            os._exit(0)  # no ack, no release
    os.waitpid(pid, 0)
    items, owner = w.read_result(marker)
    assert items == [1, 2, 3]
    (claimed,) = claimed_files(q.path)
    assert claimed.startswith(f"c_{owner}__")
    os.utime(q.path / claimed)  # renewed just now: the lease is live, the pid is dead
    report = q.recover()
    assert report.returned == [once(ready)] and report.remote == 0 and report.leased == []


def test_live_claim_is_renewed_beyond_the_lease(tmp_path, monkeypatch):
    """A consumer keeps its claim however long it holds it, also when it was long in line.

    The recovery runs in this process with the namespace it sees changed, so
    the consumer looks like one of another container: only the lease protects it.
    """
    lease = 1.0
    q = turbo_queue.Queue(tmp_path / "q", max_batch_age=None, lease_timeout=lease)
    ready = put_batch(q, list(range(5)))
    age(q.path / ready, 3600)  # waited an hour in line: a rename alone would keep that mtime
    # A renewer of its own, whose first round comes lease/4 after the claim: only the
    # claim itself can have renewed the file before then.
    monkeypatch.setattr(_lease, "_renewer", _lease._Renewer())
    c = q.consumer()
    try:
        assert c.get_batch(timeout=5) == list(range(5))
        (claimed,) = claimed_files(q.path)
        path = str(q.path / claimed)
        assert time.time() - os.stat(path).st_mtime < lease, "the claim kept the mtime of its hour in line"
        assert _lease.held() == {path: lease}
        claimed_at = time.time()
        monkeypatch.setattr(_naming, "_local_ns", "%08x" % (int(_naming.local_namespace() or "0", 16) ^ 1))
        assert c._owner.is_alive() is None
        renewals = set()
        while time.time() < claimed_at + 3 * lease:
            report = q.recover()
            assert report.returned == [] and report.leased == [claimed], "a live claim was taken"
            renewals.add(os.stat(path).st_mtime)
            time.sleep(lease / 20)
        assert len(renewals) >= 4  # renewed every lease/4, not once
        assert claimed_files(q.path) == [claimed]
        c.ack()
        assert _lease.held() == {}
    finally:
        c.close()


def test_release_and_ack_stop_the_renewal(tmp_path, monkeypatch):
    monkeypatch.setattr(_lease, "_renewer", _lease._Renewer())  # what other tests' consumers hold aside
    q = turbo_queue.Queue(tmp_path / "q", batch_size=2, max_batch_age=None, lease_timeout=60)
    with q.producer() as p:
        p.put_many([1, 2, 3, 4])
    with q.consumer() as c:
        with pytest.raises(RuntimeError), c.batch(timeout=5):
            assert list(_lease.held().values()) == [60.0]
            raise RuntimeError("handler failed")
        assert _lease.held() == {}  # released
        c.get_batch(timeout=5)
        (claimed,) = claimed_files(q.path)
        assert list(_lease.held()) == [str(q.path / claimed)]
        c.ack()
        assert _lease.held() == {}


@pytest.mark.timeout(30)
def test_forked_child_renews_nothing_of_its_parent(tmp_path, monkeypatch):
    monkeypatch.setattr(_lease, "_renewer", _lease._Renewer())
    q = turbo_queue.Queue(tmp_path / "q", max_batch_age=None, lease_timeout=60)
    put_batch(q, [1])
    out = tmp_path / "child"
    with q.consumer() as c:
        c.get_batch(timeout=5)
        assert len(_lease.held()) == 1
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                w.write_result(out, (_lease.held(), _lease._renewer.thread))
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert w.read_result(out) == ({}, None)
        assert len(_lease.held()) == 1  # the parent still renews its own


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "60", True, None])
def test_lease_timeout_is_validated(tmp_path, bad):
    with pytest.raises(ValueError, match="lease_timeout"):
        turbo_queue.Queue(tmp_path / "q", lease_timeout=bad)


def test_lease_timeout_travels_with_the_queue(tmp_path):
    q = turbo_queue.Queue(tmp_path / "q", lease_timeout=75)
    assert q.lease_timeout == 75.0
    assert pickle.loads(pickle.dumps(q)).lease_timeout == 75.0
    assert turbo_queue.Queue(tmp_path / "q").lease_timeout == _lease.DEFAULT_LEASE_TIMEOUT >= 60


def test_cli_recover_takes_a_lease_timeout(tmp_path, capsys):
    q = turbo_queue.Queue(tmp_path / "q", max_batch_age=None)
    remote = _naming.Owner("some-other-host", 1234, 0, "0badf00d", "12345678")
    ready = _naming.BatchName(_naming.READY, 5, 1, 1, remote).name()
    claimed = q.path / _naming.claimed_name(remote, ready)
    claimed.write_bytes(w.batch_bytes(["c"], owner=str(remote)))
    age(claimed, 30)
    assert cli(["recover", str(q.path), "--json"]) == 0  # 30 s old, default lease 120 s
    assert json.loads(capsys.readouterr().out)["leased"] == [claimed.name]
    assert cli(["recover", str(q.path), "--lease-timeout", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["returned"] == [once(ready)]


# -- another PID namespace ---------------------------------------------------------------


@pytest.fixture
def unshare_pid():
    """The command prefix that runs a process in a new PID namespace, or skip saying why not."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("unshare --pid needs root (tests run as root in CI)")
    exe = shutil.which("unshare")
    if exe is None:
        pytest.skip("no unshare(1) here (util-linux)")
    cmd = [exe, "--pid", "--fork", "--kill-child", "--mount-proc"]
    probe = subprocess.run(cmd + ["true"], capture_output=True, text=True, timeout=20)
    if probe.returncode != 0:
        pytest.skip(f"unshare --pid refused here: {probe.stderr.strip() or probe.returncode}")
    return cmd


@pytest.mark.timeout(90)
def test_claim_in_another_pid_namespace_is_a_lease(tmp_path, unshare_pid):
    """A consumer in its own PID namespace (a container with this host name) keeps its claim
    while it lives, past its lease (renewed); once it is gone its claim is recovered, after the lease."""
    lease = 2.0
    q = turbo_queue.Queue(tmp_path / "q", max_batch_age=None, lease_timeout=lease)
    ready = put_batch(q, list(range(7)))
    age(q.path / ready, 3600)
    result, signal = tmp_path / "result", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(w.REPO)}
    proc = subprocess.Popen(unshare_pid + [sys.executable, str(WORKER), str(q.path), str(lease), str(result),
                                           str(signal)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        w.wait_for(result.exists, timeout=30, what="the namespaced consumer to claim the batch")
        got = ast.literal_eval(result.read_text())
        assert got["items"] == list(range(7))
        assert got["ns"] != _naming.local_namespace()  # it really runs in another namespace
        assert got["held"] == claimed_files(q.path)[0]
        claimed = got["held"]
        claimed_at = time.time()
        # While it lives: never taken, for longer than its lease (its renewer keeps it).
        while time.time() < claimed_at + 2 * lease:
            report = q.recover()
            assert report.returned == [] and report.leased == [claimed], "a live claim was taken"
            time.sleep(0.05)
        assert claimed_files(q.path) == [claimed]
        signal.touch()
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        signal.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # Gone, without ack or release.  Not checkable from here: its lease is waited for...
    slow = turbo_queue.Queue(q.path, max_batch_age=None, lease_timeout=60)
    assert slow.recover().leased == [claimed]
    # ...and once it lapsed the batch is back in line and delivered again.
    age(q.path / claimed, 61)
    assert slow.recover().returned == [once(ready)]
    assert _drain(slow) == list(range(7))

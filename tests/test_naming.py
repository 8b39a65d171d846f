"""The file-name grammar: names are the whole state machine, so they must round-trip exactly."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turbo_queue import _naming as naming

hosts = st.text(min_size=0, max_size=40)  # any characters: sanitize_host must cope
owners = st.builds(
    naming.Owner,
    host=hosts.map(naming.sanitize_host),
    pid=st.integers(min_value=0, max_value=2**31 - 1),
    start=st.integers(min_value=0, max_value=2**63),
    nonce=st.text(alphabet="0123456789abcdef", min_size=8, max_size=8),
)
seal_ns = st.integers(min_value=0, max_value=10**20 - 1)
seqs = st.integers(min_value=0, max_value=10**12 - 1)
counts = st.integers(min_value=0, max_value=10**9)
batch_names = st.builds(naming.BatchName, state=st.sampled_from([naming.LOADING, naming.READY]),
                        seal_ns=seal_ns, seq=seqs, count=counts, owner=owners)


@settings(deadline=None)
@given(hosts)
def test_sanitized_host_is_safe(host):
    safe = naming.sanitize_host(host)
    assert safe
    assert "_" not in safe and "/" not in safe
    assert all(c.isascii() and (c.isalnum() or c in ".-") for c in safe)


@settings(deadline=None)
@given(owners)
def test_owner_round_trips(owner):
    assert naming.Owner.parse(str(owner)) == owner


@settings(deadline=None)
@given(batch_names)
def test_batch_name_round_trips(bn):
    name = bn.name()
    assert name.startswith(bn.state) and name.endswith(naming.SUFFIX)
    assert "/" not in name and "\x00" not in name
    assert naming.parse_batch_name(name) == bn
    # The other state's name parses to the same fields.
    other = naming.READY if bn.state == naming.LOADING else naming.LOADING
    assert naming.parse_batch_name(bn.name(other)) == naming.BatchName(other, bn.seal_ns, bn.seq, bn.count,
                                                                       bn.owner)
    assert naming.is_ready_name(name) == (bn.state == naming.READY)


@settings(deadline=None)
@given(batch_names, owners)
def test_claimed_name_round_trips(bn, consumer):
    ready = bn.name(naming.READY)
    claimed = naming.claimed_name(consumer, ready)
    parsed = naming.parse_claimed_name(claimed)
    assert parsed == naming.ClaimedName(consumer, ready)
    # A claimed name is never taken for a ready or loading one.
    assert naming.parse_batch_name(claimed) is None
    assert not naming.is_ready_name(claimed)


@settings(max_examples=200, deadline=None)
@given(st.lists(batch_names, min_size=2, max_size=20, unique_by=lambda b: (b.seal_ns, b.seq, str(b.owner))))
def test_ready_names_sort_by_seal_time_then_seq(bns):
    ready = [naming.BatchName(naming.READY, b.seal_ns, b.seq, b.count, b.owner) for b in bns]
    by_name = sorted(ready, key=lambda b: b.name())
    keys = [(b.seal_ns, b.seq) for b in by_name]
    assert keys == sorted(keys)


def test_real_owner_names_this_process():
    owner = naming.make_owner()
    assert owner.pid == os.getpid()
    assert owner.host == naming.local_host()
    assert naming.Owner.parse(str(owner)) == owner
    assert owner.is_alive() is True
    other = naming.make_owner()
    assert other.nonce != owner.nonce


def test_owner_on_another_host_is_unknowable():
    owner = naming.Owner(naming.local_host() + "x", os.getpid(), 0, "00000000")
    assert owner.is_alive() is None


def test_reused_pid_is_dead():
    me = naming.make_owner()
    if not me.start:
        pytest.skip("no /proc start time here")
    reused = naming.Owner(me.host, me.pid, me.start + 1, me.nonce)
    assert reused.is_alive() is False


@pytest.mark.parametrize("pid", [0, 2**31 - 1, 2**40, 10**30])
def test_impossible_pids_do_not_crash_liveness(pid):
    # A name can carry any digits; liveness must answer, not raise (recovery
    # runs inside every idle consumer).
    owner = naming.Owner(naming.local_host(), pid, 0, "00000000")
    assert owner.is_alive() in (True, False)
    if pid > 2**31:
        assert owner.is_alive() is False


@pytest.mark.parametrize("name", [
    "", "r_", "r_.tqb", "x_00000000000000000001_000000000001_1_h-1-0-00000000.tqb",
    "r_0001_000000000001_1_h-1-0-00000000.tqb",  # seal_ns not 20 digits
    "r_00000000000000000001_000000000001_1_h-1-0-0000000.tqb",  # nonce 7 digits
    "r_00000000000000000001_000000000001_1_h_x-1-0-00000000.tqb",  # '_' in host
    "r_00000000000000000001_000000000001_1_h-1-0-00000000.tqb.tmp",
    "r_00000000000000000001_000000000001_-1_h-1-0-00000000.tqb",
    "CLOSED", "aside",
])
def test_malformed_batch_names_are_rejected(name):
    assert naming.parse_batch_name(name) is None


@pytest.mark.parametrize("name", [
    "c_", "c_h-1-0-00000000", "c_h-1-0-00000000__x.tqb", "c_h-1-0-00000000_r_x.tqb",
    "c_bad__r_x.tqb", "c_h-1-0-00000000__r_x.tmp",
])
def test_malformed_claimed_names_are_rejected(name):
    assert naming.parse_claimed_name(name) is None


def test_claimed_name_keeps_a_stray_ready_name():
    owner = naming.make_owner()
    parsed = naming.parse_claimed_name(naming.claimed_name(owner, "r_garbage.tqb"))
    assert parsed == naming.ClaimedName(owner, "r_garbage.tqb")

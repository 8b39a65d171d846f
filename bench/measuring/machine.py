"""What the machine lets a cell use, and the state that changes what it measures.

Print this machine's state with::

    python -c "import json, bench.measuring.machine as m; print(json.dumps(m.machine_state(), indent=2))"

Everything here reads files of /proc and /sys (Linux) and answers ``None``
where a file is missing or unreadable: a probe never fails a sweep.

* :func:`usable_cores` is what the harness may run on: the CPU affinity of
  this process, cut down by a cgroup CPU quota (v2 ``cpu.max``, v1
  ``cpu.cfs_quota_us``) of its cgroup or any parent.  ``os.cpu_count()``
  counts the machine's cores, which a container or ``taskset`` may not give us.
* :func:`cpu_mhz` is the current clock of the given cores (cpufreq's
  ``scaling_cur_freq``, else ``/proc/cpuinfo``); sampled at both window edges.
* :func:`cpu_times_total` reads ``/proc/stat``'s per-core lines so that
  :func:`steal_pct` can say how much of the window a hypervisor took away.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

_SYS_CPU = Path("/sys/devices/system/cpu")


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: str | Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def affinity() -> list[int]:
    """The cores this process may run on, sorted."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cgroup_dirs() -> list[Path]:
    """This process's cgroup directories, innermost first, for v2 and v1 (cpu)."""
    text = _read("/proc/self/cgroup")
    if not text:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hid, controllers, rel = parts
        rel = rel.lstrip("/")
        if controllers == "":
            base = Path("/sys/fs/cgroup")  # v2 unified hierarchy
        elif "cpu" in controllers.split(","):
            base = Path("/sys/fs/cgroup") / controllers
            if not base.exists():
                base = Path("/sys/fs/cgroup/cpu")
        else:
            continue
        d = base / rel if rel else base
        while True:
            out.append(d)
            if d == base or d.parent == d:
                break
            d = d.parent
    return out


def cgroup_cpu_quota() -> float | None:
    """The tightest CPU quota (in cores) of this process's cgroups, or None if unlimited."""
    best = None
    for d in _cgroup_dirs():
        quota = period = None
        text = _read(d / "cpu.max")
        if text:
            fields = text.split()
            if len(fields) == 2 and fields[0] != "max":
                try:
                    quota, period = int(fields[0]), int(fields[1])
                except ValueError:
                    pass
        else:
            q, p = _read_int(d / "cpu.cfs_quota_us"), _read_int(d / "cpu.cfs_period_us")
            if q is not None and p and q > 0:
                quota, period = q, p
        if quota and period:
            cores = quota / period
            best = cores if best is None else min(best, cores)
    return best


def usable_cores() -> int:
    """Cores the harness can keep busy: affinity, cut to the cgroup quota (at least 1).

    A fractional quota is rounded to the nearest whole core: 1.5 cores of
    quota keep one process busy and a second half of the time.
    """
    n = len(affinity())
    quota = cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota + 0.5)))
    return max(1, n)


def cpu_mhz(cores: list[int] | None = None) -> float | None:
    """Mean current clock (MHz) of ``cores`` (default: the usable ones), or None."""
    cores = affinity() if cores is None else cores
    vals = []
    for c in cores:
        khz = _read_int(_SYS_CPU / f"cpu{c}" / "cpufreq" / "scaling_cur_freq")
        if khz:
            vals.append(khz / 1000.0)
    if vals:
        return sum(vals) / len(vals)
    text = _read("/proc/cpuinfo")
    if not text:
        return None
    by_core: dict[int, float] = {}
    current = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            try:
                current = int(value)
            except ValueError:
                current = None
        elif key == "cpu MHz" and current is not None:
            try:
                by_core[current] = float(value)
            except ValueError:
                pass
    vals = [by_core[c] for c in cores if c in by_core]
    return sum(vals) / len(vals) if vals else None


def cpu_times_total(cores: list[int] | None = None) -> dict | None:
    """Summed ``/proc/stat`` jiffies of ``cores``: {'total': t, 'steal': s}, or None."""
    text = _read("/proc/stat")
    if not text:
        return None
    want = set(affinity() if cores is None else cores)
    total = steal = 0
    seen = False
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        fields = line.split()
        try:
            core = int(fields[0][3:])
        except ValueError:
            continue
        if core not in want:
            continue
        nums = [int(x) for x in fields[1:]]
        # user nice system idle iowait irq softirq steal guest guest_nice:
        # guest time is already inside user/nice, so it is left out.
        total += sum(nums[:8])
        steal += nums[7] if len(nums) > 7 else 0
        seen = True
    return {"total": total, "steal": steal} if seen else None


def steal_pct(before: dict | None, after: dict | None) -> float | None:
    """Steal time between two :func:`cpu_times_total` readings, as % of all CPU time."""
    if not before or not after:
        return None
    dt = after["total"] - before["total"]
    if dt <= 0:
        return None
    return 100.0 * (after["steal"] - before["steal"]) / dt


def clock_tick_s() -> float:
    """Resolution of the per-process CPU times psutil reads (/proc/PID/stat: clock ticks)."""
    try:
        return 1.0 / os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 0.01


# --------------------------------------------------------------------------
# meta.json: the machine's state
# --------------------------------------------------------------------------


def governor() -> str | None:
    return _read(_SYS_CPU / "cpu0" / "cpufreq" / "scaling_governor")


def boost() -> bool | None:
    """Turbo/boost on? (cpufreq/boost, else intel_pstate's no_turbo inverted)."""
    v = _read_int(_SYS_CPU / "cpufreq" / "boost")
    if v is not None:
        return bool(v)
    v = _read_int(_SYS_CPU / "intel_pstate" / "no_turbo")
    if v is not None:
        return not v
    return None


def smt_siblings() -> int | None:
    """Hardware threads per core (cpu0's thread_siblings_list)."""
    text = _read(_SYS_CPU / "cpu0" / "topology" / "thread_siblings_list")
    if not text:
        return None
    return len(_parse_cpu_list(text))


def _parse_cpu_list(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def numa_nodes() -> int | None:
    try:
        nodes = [p for p in Path("/sys/devices/system/node").iterdir()
                 if p.name.startswith("node") and p.name[4:].isdigit()]
    except OSError:
        return None
    return len(nodes) or None


def inotify_max_user_instances() -> int | None:
    return _read_int("/proc/sys/fs/inotify/max_user_instances")


_VM_PRODUCTS = ("kvm", "qemu", "vmware", "virtualbox", "hvm domu", "bochs", "google compute",
                "virtual machine", "openstack", "amazon ec2", "cloud hypervisor", "firecracker")


def virtualization() -> tuple[bool | None, str]:
    """(is_vm, how it was told): systemd-detect-virt, the DMI product name, cpuinfo's flag."""
    tool = shutil.which("systemd-detect-virt")
    tool_says_none = False
    if tool:
        try:
            out = subprocess.run([tool, "--vm"], capture_output=True, text=True, timeout=5)
            name = out.stdout.strip()
            if name and name != "none":
                return True, f"systemd-detect-virt: {name}"
            tool_says_none = name == "none"
        except (OSError, subprocess.SubprocessError):
            pass
    product = _read("/sys/class/dmi/id/product_name")
    if product and any(v in product.lower() for v in _VM_PRODUCTS):
        return True, f"dmi product_name: {product}"
    text = _read("/proc/cpuinfo")
    if text:
        for line in text.splitlines():
            if line.startswith("flags"):
                if " hypervisor" in line:
                    return True, "cpuinfo flag: hypervisor"
                break
    if tool_says_none:
        return False, "systemd-detect-virt: none"
    if text is not None and sys.platform.startswith("linux"):
        return False, "no hypervisor flag in /proc/cpuinfo"
    return None, "unknown"


def machine_state() -> dict:
    """The meta.json keys of the machine's state (see bench.schema.META_KEYS)."""
    is_vm, how = virtualization()
    return {
        "usable_cores": usable_cores(),
        "cpu_affinity": affinity(),
        "cgroup_cpu_quota": cgroup_cpu_quota(),
        "governor": governor(),
        "boost": boost(),
        "smt_siblings": smt_siblings(),
        "numa_nodes": numa_nodes(),
        "inotify_max_user_instances": inotify_max_user_instances(),
        "is_vm": is_vm,
        "vm_detail": how,
        "cpu_mhz_at_start": cpu_mhz(),
    }

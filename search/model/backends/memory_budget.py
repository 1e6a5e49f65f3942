"""How much memory an export may take: the container's limit, what the machine has free, what is left.

A conversion peaks at a few times the checkpoint's size (measured for siglip2-base: bench/RESULTS.md).
A 4 GB container that starts one without looking is killed, so the server reads the limit it lives
under (cgroup v2 ``memory.max``, or v1 ``memory.limit_in_bytes``) and what the kernel says is available,
and starts an export only where its estimated peak fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UNLIMITED = 1 << 60  # cgroup v1 writes a number near 2**63 for "no limit"
# Bytes one export step peaks at, per byte of float32 weights, beyond STEP_OVERHEAD. Measured step by step
# for siglip2-base-512 (1.50 GB of weights; bench/bench_export_memory.py, bench/RESULTS.md "The export's
# memory, step by step"): the int8 compression peaks at 2.22 GB (a tower's float32 IR beside its int8
# weights), the text tower's conversion at 1.68 GB, the vision tower's at 1.61 GB, each once the previous
# tower's freed memory is given back. 1.2 x 1.50 GB + 0.6 GB = 2.4 GB, a little above the measured peak.
# (An earlier 4.1 came from summing the RSS of the export's process tree, which counted OpenVINO's
# telemetry forks, copies of the converting process, as memory of their own.)
PEAK_PER_WEIGHT_BYTE = 1.2
STEP_OVERHEAD = 600 * 1024 * 1024  # the libraries a step imports (torch, openvino, nncf)
RESERVE = 256 * 1024 * 1024  # kept free for the server's own requests while the export runs


@dataclass(frozen=True)
class MemoryFacts:
    """What the kernel says: the container's limit and use (None: no limit), and the machine's available."""

    limit: int | None
    used: int | None
    available: int | None

    def headroom(self) -> int | None:
        """Bytes that can still be taken without hitting the limit or the machine's end (None: unknown)."""
        room = []
        if self.limit is not None and self.used is not None:
            room.append(self.limit - self.used)
        if self.available is not None:
            room.append(self.available)
        return min(room) if room else None


def read_memory(cgroup_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")) -> MemoryFacts:
    limit, used = _cgroup_v2(cgroup_root, proc) or _cgroup_v1(cgroup_root) or (None, None)
    return MemoryFacts(limit, used, _meminfo_available(proc))


def export_budget(configured: int | None, facts: MemoryFacts) -> int | None:
    """Bytes an export step may peak at: the setting where one is given, else the headroom less a
    reserve for serving (None: unknown, the export is not held back)."""
    if configured is not None:
        return configured
    headroom = facts.headroom()
    return None if headroom is None else max(0, headroom - RESERVE)


def export_need(weight_bytes: int) -> int:
    """The estimated peak of one export step for a checkpoint with ``weight_bytes`` of float32 weights."""
    return int(weight_bytes * PEAK_PER_WEIGHT_BYTE) + STEP_OVERHEAD


def weight_bytes(folder: Path) -> int:
    """The size of a checkpoint's weight files (safetensors or PyTorch bins)."""
    return sum(path.stat().st_size for pattern in ("*.safetensors", "*.bin") for path in folder.glob(pattern))


def _cgroup_v2(root: Path, proc: Path) -> tuple[int | None, int | None] | None:
    # The process's own cgroup ("0::/path"); inside a container that is usually the root of the mount.
    folder = root
    try:
        for line in (proc / "self" / "cgroup").read_text().splitlines():
            if line.startswith("0::"):
                candidate = root / line[3:].lstrip("/")
                if (candidate / "memory.max").exists():
                    folder = candidate
    except OSError:
        pass
    limit = _read_int(folder / "memory.max")
    if limit is None and not (folder / "memory.max").exists():
        return None
    return limit, _working_set(_read_int(folder / "memory.current"), folder / "memory.stat", "inactive_file")


def _cgroup_v1(root: Path) -> tuple[int | None, int | None] | None:
    folder = root / "memory"
    if not (folder / "memory.limit_in_bytes").exists():
        return None
    limit = _read_int(folder / "memory.limit_in_bytes")
    used = _working_set(
        _read_int(folder / "memory.usage_in_bytes"), folder / "memory.stat", "total_inactive_file"
    )
    return (limit if limit is not None and limit < UNLIMITED else None), used


def _working_set(usage: int | None, stat: Path, inactive_key: str) -> int | None:
    """The cgroup's usage less its inactive file cache: the kernel reclaims those pages before it kills
    anything (the checkpoint just read, for one), so they are room an export can use. The same measure
    as the kubelet's and ``docker stats``' working set."""
    if usage is None:
        return None
    try:
        for line in stat.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key and value.strip().isdigit():
                return max(0, usage - int(value))
    except OSError:
        pass
    return usage


def _read_int(path: Path) -> int | None:
    """An integer file's value; None for "max" (v2's "no limit") or a file that cannot be read."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available(proc: Path) -> int | None:
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None

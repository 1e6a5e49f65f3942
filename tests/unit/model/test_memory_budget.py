"""The export's memory budget, read from real cgroup and /proc files laid out in a folder."""

from __future__ import annotations

from pathlib import Path

from search.model.backends.memory_budget import RESERVE, MemoryFacts, export_budget, export_need, read_memory

GB = 1_000_000_000


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def proc_with(tmp_path: Path, available_kb: int, cgroup: str = "0::/\n") -> Path:
    proc = tmp_path / "proc"
    write(proc / "meminfo", f"MemTotal:       24000000 kB\nMemAvailable:   {available_kb} kB\n")
    write(proc / "self" / "cgroup", cgroup)
    return proc


def test_cgroup_v2_limit_of_the_process_own_cgroup(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "memory.max", "max\n")  # the root of the mount: no limit there
    write(root / "app.slice" / "memory.max", f"{4 * GB}\n")
    write(root / "app.slice" / "memory.current", f"{1 * GB}\n")
    facts = read_memory(root, proc_with(tmp_path, 20_000_000, "0::/app.slice\n"))
    assert facts == MemoryFacts(limit=4 * GB, used=1 * GB, available=20_000_000 * 1024)
    assert facts.headroom() == 3 * GB  # the container, not the machine, is the bound


def test_cgroup_v2_max_means_no_limit(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "memory.max", "max\n")
    write(root / "memory.current", "123\n")
    facts = read_memory(root, proc_with(tmp_path, 1_000_000))
    assert facts.limit is None and facts.headroom() == 1_000_000 * 1024


def test_cgroup_v1_limit_and_its_no_limit_number(tmp_path):
    root = tmp_path / "cgroup"
    write(root / "memory" / "memory.limit_in_bytes", f"{4 * GB}\n")
    write(root / "memory" / "memory.usage_in_bytes", f"{3 * GB}\n")
    assert read_memory(root, proc_with(tmp_path, 20_000_000)).headroom() == 1 * GB
    write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    assert read_memory(root, proc_with(tmp_path, 2_000_000)).limit is None


def test_the_budget_keeps_a_reserve_and_a_setting_overrides_it():
    facts = MemoryFacts(limit=4 * GB, used=1 * GB, available=10 * GB)
    assert export_budget(None, facts) == 3 * GB - RESERVE
    assert export_budget(123, facts) == 123
    assert export_budget(None, MemoryFacts(None, None, None)) is None  # unknown: not held back


def test_a_base_sized_checkpoint_does_not_fit_a_4_gb_container_that_serves_it():
    # siglip2-base-512: 1.5 GB of float32 weights; the server itself holds about 1.5 GB.
    budget = export_budget(None, MemoryFacts(limit=4 * GB, used=int(1.5 * GB), available=20 * GB))
    assert export_need(1_503_344_520) > budget

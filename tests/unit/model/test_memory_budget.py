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


def test_a_base_sized_checkpoint_fits_a_4_gb_container_only_beside_a_small_server():
    # siglip2-base-512: 1.5 GB of float32 weights, an export peak measured at 2.2 GB.
    need = export_need(1_503_344_520)
    assert 2.2 * GB < need < 2.5 * GB
    beside_1_gb = export_budget(None, MemoryFacts(limit=4 * GB, used=1 * GB, available=20 * GB))
    beside_2_gb = export_budget(None, MemoryFacts(limit=4 * GB, used=2 * GB, available=20 * GB))
    assert beside_2_gb < need <= beside_1_gb


def test_inactive_file_cache_is_room_not_use(tmp_path):
    # The checkpoint just read sits in the page cache, counted in memory.current; the kernel reclaims
    # it before it kills anything, so the working set (current - inactive_file) is what is used.
    root = tmp_path / "cgroup"
    write(root / "memory.max", f"{4 * GB}\n")
    write(root / "memory.current", f"{3 * GB}\n")
    write(
        root / "memory.stat",
        f"anon {1 * GB}\nfile {2 * GB}\nactive_file {GB // 2}\ninactive_file {3 * GB // 2}\n",
    )
    assert read_memory(root, proc_with(tmp_path, 20_000_000)).used == 3 * GB // 2
    v1 = tmp_path / "v1"
    write(v1 / "memory" / "memory.limit_in_bytes", f"{4 * GB}\n")
    write(v1 / "memory" / "memory.usage_in_bytes", f"{3 * GB}\n")
    write(v1 / "memory" / "memory.stat", f"cache {2 * GB}\ninactive_file 7\ntotal_inactive_file {GB}\n")
    assert read_memory(v1, proc_with(tmp_path, 20_000_000)).used == 2 * GB

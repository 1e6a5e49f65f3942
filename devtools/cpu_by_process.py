"""Run a command and say where its CPU went, by kind of process: the pytest workers, Ray's actors and
servers, Chromium, PostgreSQL. Linux only (it reads /proc).

    python -m devtools.cpu_by_process -- .venv/bin/python -m pytest -n 2 --dist loadfile -q

Every process on the machine is sampled every ``--every`` seconds while the command runs; each one's CPU
time (user + system) is its last sample's minus what it had used before the command started. A process
that lives less than one interval is missed, so "attributed" can fall short of "busy": busy is the
machine's whole CPU time from /proc/stat, other load included. Kinds are the first words of a command
line with their folders stripped, as last seen (Ray names its workers by role: ``ray::MapWorker(...)``,
``ray::IDLE``; a pytest-xdist worker retitles itself ``[pytest-xdist running] <test>`` and ends
``[pytest-xdist idle]``)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def busy_seconds() -> float:
    """The machine's CPU time so far, all cores, less idle and iowait."""
    values = [int(v) for v in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICKS


def kind_of(command_line: str, words: int = 4) -> str:
    return " ".join(word.rsplit("/", 1)[-1] for word in command_line.split()[:words])[:90]


@dataclass
class Sampler:
    """Last seen (kind, CPU seconds) per process, keyed by (pid, start time): pids are reused."""

    seen: dict[tuple[int, int], tuple[str, float]] = field(default_factory=dict)

    def sample(self) -> None:
        for entry in PROC.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                command_line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # ended between listing and reading
            fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
            key = (int(entry.name), int(fields[19]))
            cpu = (int(fields[11]) + int(fields[12])) / TICKS
            kind = kind_of(command_line) if command_line.strip() else self.seen.get(key, ("?", 0))[0]
            self.seen[key] = (kind, cpu)

    def since(self, before: dict[tuple[int, int], tuple[str, float]]) -> tuple[Counter[str], Counter[str]]:
        """(CPU seconds, processes) per kind, for the processes that used CPU since ``before``."""
        seconds: Counter[str] = Counter()
        processes: Counter[str] = Counter()
        for key, (kind, cpu) in self.seen.items():
            used = cpu - before.get(key, (kind, 0.0))[1]
            if used > 0:
                seconds[kind] += used
                processes[kind] += 1
        return seconds, processes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("--top", type=int, default=25, help="kinds to print")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")

    sampler = Sampler()
    sampler.sample()
    before = dict(sampler.seen)
    busy_before, started = busy_seconds(), time.monotonic()
    process = subprocess.Popen(command)
    while process.poll() is None:
        sampler.sample()
        time.sleep(args.every)
    sampler.sample()
    wall, busy = time.monotonic() - started, busy_seconds() - busy_before

    seconds, processes = sampler.since(before)
    print(
        f"\nwall {wall:.1f} s; machine busy {busy:.1f} CPU-s ({busy / wall:.2f} cores); "
        f"attributed {sum(seconds.values()):.1f} CPU-s",
        file=sys.stderr,
    )
    print(f"{'CPU-s':>8}  {'procs':>5}  kind", file=sys.stderr)
    for kind, used in seconds.most_common(args.top):
        print(f"{used:8.1f}  {processes[kind]:5d}  {kind}", file=sys.stderr)
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())

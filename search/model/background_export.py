"""The faster runtime's export, built while the plain one serves, then switched to.

A first start used to convert the checkpoint before serving anything: minutes, several times the
checkpoint's size in memory, and a process Ctrl-C could not stop. Here the server serves torch (bfloat16
where the CPU has it natively) at once, and this builds the export ``auto`` prefers in child processes
(``export_job``: one per step, niced, killable), under a memory budget (``memory_budget``). Once the
export passes its accuracy check (cosine >= 0.999 to float32, as every runtime must) the encoder
switches to it between batches: a batch running then finishes on torch.

``status()`` is what /ready, /info and /metrics show: "serving torch-bfloat16; building
openvino-int8, 40%".
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from search.model.backends import BackendUnavailable, RuntimeChoice
from search.model.backends.export_cache import ExportMissing, is_built, remove_partial
from search.model.backends.export_job import command, parse_progress
from search.model.backends.memory_budget import export_budget, export_need, read_memory, weight_bytes

if TYPE_CHECKING:
    from search.model.encoder import Encoder

log = logging.getLogger(__name__)

EXPORT_COMMAND = "python -m indexer export-model"
BUDGET_SETTING = "VITRINE_EXPORT_MEMORY_BUDGET"
PROGRESS_INTERVAL_S = 5.0
KILL_GRACE_S = 0.5  # a step asked to stop gets this long before SIGKILL


@dataclass
class ExportStatus:
    """Where the background export stands (read by the probes; written by its thread)."""

    serving: str
    state: str = "waiting"  # waiting, building, switched, skipped, failed, stopped, done
    building: str | None = None
    percent: int = 0
    step: str = ""
    reason: str = ""
    started_at: float = field(default_factory=time.monotonic)
    switched_after_s: float | None = None

    def phase(self) -> str:
        if self.state == "building" and self.building:
            return f"serving {self.serving}; building {self.building}, {self.percent}%"
        if self.state in ("skipped", "failed") and self.reason:
            return f"serving {self.serving}; {self.reason}"
        return f"serving {self.serving}"

    def as_dict(self) -> dict[str, object]:
        facts: dict[str, object] = {"phase": self.phase(), "serving": self.serving, "export": self.state}
        if self.building:
            facts |= {"building": self.building, "percent": self.percent, "step": self.step}
        if self.switched_after_s is not None:
            facts["switched_after_s"] = round(self.switched_after_s, 1)
        return facts


def label(choice: RuntimeChoice) -> str:
    return f"{choice.runtime}-{choice.precision}"


def steps_of(choice: RuntimeChoice) -> list[RuntimeChoice]:
    """The export steps ``choice`` needs, one child process each: OpenVINO int8 compresses the float IR."""
    if choice.runtime == "openvino" and choice.precision == "int8":
        from search.model.backends.openvino_backend import float_fallback

        return [RuntimeChoice("openvino", float_fallback()), choice]
    return [choice]


class BackgroundExport:
    def __init__(
        self,
        encoder: Encoder,
        pending: list[RuntimeChoice],
        *,
        model_folder: Path,
        cache_dir: Path,
        export_key: str,
        memory_budget: int | None = None,
        threads: int | None = None,
        log_level: str = "WARNING",
        progress_interval: float = PROGRESS_INTERVAL_S,
    ) -> None:
        self.encoder = encoder
        self.pending = pending
        self.model_folder = model_folder
        self.cache_dir = cache_dir
        self.export_key = export_key
        self.memory_budget = memory_budget
        self.threads = threads
        self.log_level = log_level
        self.progress_interval = progress_interval
        self.status = ExportStatus(
            serving=label(encoder.backend.choice),
            state="building",
            building=label(pending[0]) if pending else None,
            step="starting",
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None
        # Daemon: a server that exits never waits for it (stop() ends its child first).
        self._thread = threading.Thread(target=self._run, name="vitrine-export", daemon=True)
        self._started = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._started.set()

    def stop(self, timeout: float = 1.0) -> None:
        """End the export now: its child is killed and whatever it had written removed."""
        self._stop.set()
        with self._lock:
            child = self._child
        if child is not None:
            _end(child)
            remove_partial(self.cache_dir, child.pid)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self.status.state in ("waiting", "building"):
            self.status.state = "stopped"

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the export's work is over within ``timeout`` (tests, the benchmark). An export not
        started yet is waited for too: the app publishes its components (and /ready answers 200) a
        moment before it starts their export."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._started.wait(timeout):
            return False
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    # The thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            for choice in self.pending:
                if self._stop.is_set() or self._try(choice):
                    return
            if self.status.state in ("waiting", "building"):
                self.status.state = "done"  # every faster choice was refused: torch stays
        except Exception as exc:  # never the server's end: it goes on serving what it serves
            self.status.state, self.status.reason = "failed", f"export failed: {exc}"
            log.exception("background export failed; serving %s", self.status.serving)

    def _try(self, choice: RuntimeChoice) -> bool:
        """Build ``choice`` where needed and switch to it. True when the work is over (switched,
        skipped, failed or stopped), False to try the next choice (this one was refused)."""
        try:
            self._switch(choice)
            return True
        except ExportMissing:
            pass
        except BackendUnavailable as exc:
            log.info("%s", exc)
            return False
        if not self._fits(choice):
            return True
        for step in steps_of(choice):
            if not is_built(self.cache_dir, self.export_key, label(step)) and not self._build(step, choice):
                return True
        self.status.step = f"loading the {label(choice)} export"
        try:
            self._switch(choice)
        except BackendUnavailable as exc:  # refused by its accuracy check: the next choice
            log.info("%s; keeping %s", exc, self.status.serving)
            return False
        return True

    def _fits(self, choice: RuntimeChoice) -> bool:
        need = export_need(weight_bytes(self.model_folder))
        facts = read_memory()
        budget = export_budget(self.memory_budget, facts)
        if budget is None or budget >= need:
            return True
        where = f"{_gb(facts.limit)} container limit, " if facts.limit else ""
        self.status.state = "skipped"
        self.status.reason = f"{label(choice)} export skipped: needs {_gb(need)}, budget {_gb(budget)}"
        # One line: what happened, why, and the two ways forward.
        log.warning(
            "not building the %s export: it needs about %s of memory and %s is left for it (%s%s "
            "available); serving %s. Raise %s (bytes) to build it here anyway, or build it on a larger "
            "machine with `%s` into the same VITRINE_CACHE_DIR (%s)",
            label(choice),
            _gb(need),
            _gb(budget),
            where,
            _gb(facts.available),
            self.status.serving,
            BUDGET_SETTING,
            EXPORT_COMMAND,
            self.cache_dir,
        )
        return False

    def _build(self, step: RuntimeChoice, target: RuntimeChoice) -> bool:
        """One step in a child process; progress logged every few seconds. False: stopped or failed."""
        self.status.state, self.status.building = "building", label(target)
        self.status.step = f"starting the {label(step)} step"
        args = command(str(self.model_folder), self.cache_dir, step.runtime, step.precision, self.export_key)
        args += ["--log-level", self.log_level]
        with self._lock:
            if self._stop.is_set():
                return False
            self._child = child = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # the terminal's Ctrl-C is the server's to handle, not the child's
                preexec_fn=_die_with_parent,
            )
        errors: deque[str] = deque(maxlen=20)
        readers = [
            threading.Thread(target=self._read_progress, args=(child,), daemon=True),
            threading.Thread(target=_collect, args=(child.stderr, errors), daemon=True),
        ]
        for reader in readers:
            reader.start()
        started = time.monotonic()
        while True:
            try:
                child.wait(self.progress_interval)
                break
            except subprocess.TimeoutExpired:
                log.info(
                    "%s (%s, %.0f s so far)",
                    self.status.phase(),
                    self.status.step,
                    time.monotonic() - started,
                )
        for reader in readers:
            reader.join(1.0)
        with self._lock:
            self._child = None
        if self._stop.is_set():
            return False
        if child.returncode != 0:
            self.status.state = "failed"
            self.status.reason = f"{label(target)} export failed (exit {child.returncode})"
            log.error(
                "building the %s export failed (exit %s); serving %s. Its last output:\n%s",
                label(step),
                child.returncode,
                self.status.serving,
                "\n".join(errors),
            )
            return False
        return True

    def _read_progress(self, child: subprocess.Popen[str]) -> None:
        for line in child.stdout or ():
            parsed = parse_progress(line)
            if parsed is not None:
                self.status.percent, self.status.step = parsed

    def _switch(self, choice: RuntimeChoice) -> None:
        """Load the built export of ``choice`` and serve it from the next batch on."""
        from search.model.backends import load_backend_choice

        backend = load_backend_choice(
            str(self.model_folder), choice, self.cache_dir, self.threads, self.encoder.checkpoint
        )
        before = self.status.serving
        self.encoder.use_backend(backend)
        elapsed = time.monotonic() - self.status.started_at
        self.status.serving, self.status.state, self.status.building = label(choice), "switched", None
        self.status.percent, self.status.step, self.status.switched_after_s = 100, "", elapsed
        log.info(
            "switched from %s to %s (%.0f s after start; its cosine to float32 passed)",
            before,
            label(choice),
            elapsed,
        )


def _gb(value: int | None) -> str:
    return "unknown" if value is None else f"{value / 1e9:.1f} GB"


def _collect(stream: object, lines: deque[str]) -> None:
    for line in stream or ():
        lines.append(line.rstrip())


def _end(child: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if the child has not ended within ``KILL_GRACE_S``; reaped either way."""
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _die_with_parent() -> None:
    """In the child, before exec: the kernel kills it if the server dies (SIGKILL leaves no orphan)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

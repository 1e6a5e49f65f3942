"""The Ray engine: ``indexer add|reembed --engine ray [--ray-address ADDRESS]``.

The driver (this process) reads the manifest and the stored products, and hands the rows to a Ray
Data pipeline: tasks fetch, decode, hash, plan and preprocess (``work.Reader``), an actor pool embeds
(``work.Embedder``: the model loaded once per actor, one GPU per actor where the cluster has GPUs).
The vectors stream back to the driver, which plans each write again against the same stored
snapshot and commits through the catalog's one writer, batch by batch, in transactions: the database
stays the source of truth, so a rerun skips what is stored, and a driver killed mid-run loses only
batches it had not committed. A worker that dies mid-batch loses nothing either: Ray runs that batch
again (tasks are retried, actors restarted) and nothing reaches the database before the driver has it.

Without an address the job starts a Ray of its own on 127.0.0.1 (no dashboard) in a process group of
its own, which a reaper process kills when the job ends, even when the job itself is killed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer import interrupts
from indexer.engines import JobOptions
from indexer.engines.work import (
    AddItem,
    Embedder,
    Reader,
    ReadResult,
    ReembedItem,
    image_preprocessor,
    model_space,
    pack,
    unpack,
)
from indexer.manifest import Manifest
from indexer.progress import Progress
from indexer.summary import RowIssue, RunSummary
from search.catalog.service import ProductService
from search.catalog.writer import PreparedWrite
from search.errors import BadInput, VitrineError
from search.model.preprocess import ImagePreprocessor
from search.model.space import EmbeddingSpace
from search.settings import Settings

log = logging.getLogger(__name__)

RAY_EXTRA = "ray"
MAX_BLOCKS = 2000  # read tasks per job: enough to spread, few enough for the scheduler
MAX_PENDING_PRODUCTS = 256  # a transaction holds at most this many products (as the local engine)


def require_ray() -> None:
    """One clear error naming the extra when Ray is not installed (checked without importing it)."""
    if importlib.util.find_spec("ray") is None:
        raise BadInput(
            f"--engine ray needs Ray, which is not installed: pip install 'vitrine[{RAY_EXTRA}]' "
            "(the optional extra 'ray': ray[data]==2.60.0)"
        )


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray for one job: joined at ``address``, or a head node of its own on 127.0.0.1 (no dashboard)
    that ends with the job. A Ray this process had already joined is used as it is."""
    require_ray()
    joined = sys.modules.get("ray")
    if joined is not None and joined.is_initialized():
        yield joined
        return
    with contextlib.ExitStack() as stack:
        if address is None:
            address = stack.enter_context(_local_head())
        import ray
        import ray.data

        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        stack.callback(ray.shutdown)
        yield ray


@contextlib.contextmanager
def _local_head() -> Iterator[str]:
    """``ray start --head --block`` on loopback in a process group of its own, watched by a reaper that
    kills that group when this process ends (even by SIGKILL); the group is ended after the block."""
    env = dict(os.environ)
    # Ray's servers listen on every interface and advertise the routable address unless this is set
    # (it also keeps other machines from joining): a job's own Ray stays on 127.0.0.1.
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # A token of the job's own (Ray's token auth), given to the head and this driver only.
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # On SIGTERM a node first drains (for up to 30 s by default: time for Ray Serve's proxies to stop
    # taking traffic) and only then ends its processes. The driver has left this Ray by then and
    # nothing else uses it: it ends at once, rather than outliving the head's wait below.
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    # Usage stats off for the driver too, not only the head (--disable-usage-stats): otherwise Ray Data
    # starts a detached actor per job (a process importing ray) to record tags nobody reports.
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    port = _free_port()
    head = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--include-dashboard=false",
            f"--dashboard-port={_free_port()}",  # the API server left without the dashboard
            # The log monitor polls every worker's log files to stream them to drivers; this job's
            # driver takes none (log_to_driver=False): a process and its polling saved.
            "--include-log-monitor=false",
            "--disable-usage-stats",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group (the reaper's target), out of reach of Ctrl-C
    )
    reaper = subprocess.Popen(
        [sys.executable, "-m", "indexer.engines.reaper", str(head.pid)],
        env=env,  # the token: the reaper also ends this Ray's workers, which leave the group
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    # Read when ray is imported: the driver's own node address is loopback too, with the head's token.
    # Put back afterwards: a process that runs more than one job (a test session, a notebook) would
    # otherwise hand this job's token to everything it starts later.
    names = (
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
        "RAY_AUTH_MODE",
        "RAY_AUTH_TOKEN",
        "RAY_USAGE_STATS_ENABLED",
    )
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: env[name] for name in names})
    try:
        _wait_for_port(port, head)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        reaper.stdin.close()  # type: ignore[union-attr]  # the reaper kills what is left
        reaper.wait(timeout=15)
        head.wait(timeout=15)
        if head.stderr is not None:
            head.stderr.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, head: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            error = head.stderr.read().decode(errors="replace") if head.stderr else ""
            raise VitrineError(
                f"the local Ray did not start (exit {head.returncode}): {error.strip()[-500:]}"
            )
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise VitrineError(f"the local Ray did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


@dataclass
class Embedded:
    """One item back from the cluster: what its read found, its vectors, and the node that embedded it."""

    result: ReadResult
    vectors: np.ndarray | None
    node: str


@dataclass
class RayEngine:
    settings: Settings
    space: EmbeddingSpace
    ray: Any
    preprocess: ImagePreprocessor  # resolved here once, sent to the read tasks
    encoder: None = None  # the model runs in the actors, never in the driver
    images: None = None

    @classmethod
    @contextlib.contextmanager
    def open(cls, settings: Settings, address: str | None) -> Iterator[RayEngine]:
        require_ray()  # the missing extra is reported before anything else happens
        space = model_space(settings)
        with ray_session(address) as ray:
            data = ray.data.DataContext.get_current()
            data.enable_progress_bars = False  # the job's own progress line says done/total/rate/ETA
            data.print_on_execution_start = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            yield cls(settings, space, ray, image_preprocessor(settings))

    # Commands ---------------------------------------------------------------------------------------

    def add(self, service: ProductService, manifest: Manifest, options: JobOptions) -> RunSummary:
        summary = RunSummary("add", total=len(manifest.rows) + len(manifest.issues))
        summary.failed.extend(manifest.issues)
        summary.attribute_columns = manifest.attribute_columns
        summary.skipped_files = manifest.skipped_files
        started = time.perf_counter()
        stored = service.catalog.get_many(row.external_id for row in manifest.rows)
        items = [
            pack(AddItem(index, row.draft, stored.get(row.external_id)))
            for index, row in enumerate(manifest.rows)
        ]
        batch = _Batch(
            service, summary, Progress(len(items), enabled=options.progress, every=options.progress_every)
        )
        try:
            stage = {"stage": "add", "base_dir": manifest.base_dir, "refetch": options.refetch}
            for done in self._embed(items, stage, options):
                row = manifest.rows[done.result.index]
                try:
                    if done.result.issue is not None:
                        raise BadInput(done.result.issue)
                    write = service.writer.plan_embedded(
                        row.draft,
                        stored.get(row.external_id),
                        done.result.sources,
                        done.result.files,
                        dict(
                            zip(
                                done.result.embed,
                                done.vectors if done.vectors is not None else [],
                                strict=True,
                            )
                        ),
                    )
                except VitrineError as exc:
                    batch.fail(RowIssue(row.where, row.external_id, exc.message))
                    continue
                batch.add(write, len(done.result.embed), done.node)
                if batch.full(options.batch_size):
                    batch.commit()
            batch.commit()
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            batch.progress.close(interrupted=summary.interrupted)
            summary.seconds = time.perf_counter() - started
            service.checkpoint()
        return summary

    def reembed(self, service: ProductService, options: JobOptions) -> RunSummary:
        from indexer.reembed import finish
        from search.catalog.spaces import ids_outside

        started = time.perf_counter()
        pending = ids_outside(service.catalog, self.space.key)
        summary = RunSummary("reembed", total=len(pending))
        records = {}
        for start in range(0, len(pending), 1000):
            records.update(service.catalog.get_by_ids(pending[start : start + 1000]))
        items = [pack(ReembedItem(index, record)) for index, record in records.items()]
        batch = _Batch(
            service, summary, Progress(len(items), enabled=options.progress, every=options.progress_every)
        )
        try:
            for done in self._embed(items, {"stage": "reembed"}, options):
                record = records[done.result.index]
                if done.result.issue is not None or done.vectors is None:
                    batch.fail(RowIssue("product", record.external_id, done.result.issue or "no vectors"))
                    continue
                write = service.writer.reembedded(record, list(done.vectors), self.space.key)
                batch.add(write, len(record.images), done.node)
                if batch.full(options.batch_size):
                    batch.commit()
            batch.commit()
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            batch.progress.close(interrupted=summary.interrupted)
        finish(service, self.space, summary)
        summary.seconds = time.perf_counter() - started
        return summary

    # The pipeline -------------------------------------------------------------------------------------

    def _embed(self, items: list[bytes], stage: dict[str, Any], options: JobOptions) -> Iterator[Embedded]:
        """Each item read by a task and embedded by an actor, in the order they finish."""
        if not items:
            return
        ray = self.ray
        gpus = int(ray.cluster_resources().get("GPU", 0))
        actors = options.actors or gpus or len([node for node in ray.nodes() if node["Alive"]])
        blocks = max(1, min(MAX_BLOCKS, math.ceil(len(items) / options.batch_size)))
        read_args = {
            "settings": self.settings,
            "model_key": self.space.key,
            "preprocess": self.preprocess,
            **stage,
        }
        dataset = (
            ray.data.from_items([{"item": item} for item in items], override_num_blocks=blocks)
            .map_batches(
                _read_batch,
                fn_kwargs=read_args,
                batch_size=options.batch_size,
                batch_format="numpy",
                # Reading waits on the network and the disk: two read tasks per CPU. (Other resources
                # than the actors' also keep Ray Data from fusing the read into the model's actor,
                # where every fetch would keep the model, a GPU's included, waiting.)
                num_cpus=0.5,
            )
            .map_batches(
                _EmbedActor,
                fn_constructor_kwargs={"settings": self.settings, "model_key": self.space.key},
                compute=ray.data.ActorPoolStrategy(size=actors),
                batch_size=options.batch_size,
                batch_format="numpy",
                num_gpus=1 if gpus else 0,  # Ray Data spreads actors over nodes (DataContext: SPREAD)
            )
        )
        log.info("ray: %d items, %d read blocks, %d model actors (%d GPUs)", len(items), blocks, actors, gpus)
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for result, vectors, node in zip(
                    batch["result"], batch["vectors"], batch["node"], strict=True
                ):
                    yield Embedded(unpack(result), unpack(vectors), str(node))
        except ray.exceptions.RayError as exc:
            raise VitrineError(f"the Ray job failed: {_first_line(exc)}") from exc


class _Batch:
    """The driver's pending writes, committed through the one writer in one transaction each."""

    def __init__(self, service: ProductService, summary: RunSummary, progress: Progress) -> None:
        self.service = service
        self.summary = summary
        self.progress = progress
        self.writes: list[tuple[PreparedWrite, int, str]] = []

    def fail(self, issue: RowIssue) -> None:
        self.summary.failed.append(issue)
        self._progress(1)

    def add(self, write: PreparedWrite, embedded: int, node: str) -> None:
        if write.plan.kind == "unchanged":
            self.summary.count("unchanged")
            self._progress(1)
            return
        self.writes.append((write, embedded, node))

    def full(self, batch_size: int) -> bool:
        return sum(n for _, n, _ in self.writes) >= batch_size or len(self.writes) >= MAX_PENDING_PRODUCTS

    def commit(self) -> None:
        if not self.writes:
            return
        interrupts.check()
        with interrupts.deferred():  # the transaction and its count: both or neither
            self.service.writer.commit([write for write, _, _ in self.writes])
            for write, embedded, node in self.writes:  # counted once committed
                self.summary.count(write.plan.kind)
                self.summary.embedded += embedded
                if embedded:
                    self.summary.nodes[node] = self.summary.nodes.get(node, 0) + embedded
            done, self.writes = len(self.writes), []
        self._progress(done)

    def _progress(self, n: int) -> None:
        summary = self.summary
        counts = {"added": summary.added, "updated": summary.updated, "failed": len(summary.failed)}
        if summary.command == "reembed":
            counts = {"reembedded": summary.updated, "failed": len(summary.failed)}
        self.progress.update(n, **counts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        if "Error" in line and ":" in line:
            return line.strip()
    return text.splitlines()[0] if text else type(exc).__name__


# What Ray runs on the workers (module level: Ray pickles them by reference) --------------------------


def _read_batch(
    batch: dict[str, np.ndarray],
    *,
    settings: Settings,
    model_key: str,
    preprocess: ImagePreprocessor,
    stage: str,
    base_dir: Path | None = None,
    refetch: bool = False,
) -> dict[str, np.ndarray]:
    reader = Reader.for_settings(settings, model_key, preprocess)
    results, pixels = [], []
    for data in batch["item"]:
        item = unpack(data)
        if stage == "add":
            result, picture_pixels = reader.read_add(item, base_dir, refetch)  # type: ignore[arg-type]
        else:
            result, picture_pixels = reader.read_reembed(item)  # type: ignore[arg-type]
        results.append(pack(result))
        pixels.append(pack(picture_pixels))
    return {"result": _objects(results), "pixels": _objects(pixels)}


class _EmbedActor:
    def __init__(self, settings: Settings, model_key: str) -> None:
        import ray

        self.embedder = Embedder(settings, model_key)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.embedder.embed([unpack(data) for data in batch["pixels"]])
        return {
            "result": batch["result"],
            "vectors": _objects([pack(v) for v in vectors]),
            "node": np.asarray([self.node] * len(vectors)),
        }


def _objects(values: list[bytes]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out

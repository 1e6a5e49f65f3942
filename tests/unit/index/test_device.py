"""Where FAISS searches (VITRINE_INDEX_DEVICE): the decision, its report, the start-up error, and the GPU
copies' bookkeeping (kept in step with writes, dropped on a FAISS error).

No GPU here: the decision is a pure function given a GPU count; the GPU copies' host-side logic runs
with FAISS's own CPU index standing in for the GPU one (``device_copy=faiss.clone_index``), which
searches the same way when no selector is passed (none ever is, on the GPU)."""

from __future__ import annotations

import time
from pathlib import Path

import faiss
import numpy as np
import pytest
from pydantic import ValidationError

from api.app import create_app
from search.errors import IndexDeviceError
from search.index import IndexSpec, VectorIndex
from search.index.exact import ExactStore
from search.index.gpu import SCRATCH_BYTES, GiB, GpuFlat, choose_device
from search.index.ivf import IvfStore
from search.settings import Settings
from search.wiring import index_spec
from tests.support.http import assert_error
from tests.support.indexer import run_indexer_in_process
from tests.support.servers import LiveServer
from tests.support.settings import indexer_settings

DIM = 16


def unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# The decision ---------------------------------------------------------------------------------------


def test_cpu_setting_never_uses_the_gpu() -> None:
    placement = choose_device("cpu", gpus=8, kind="flat", index_bytes=1, free_bytes=100 * GiB)
    assert placement.device == "cpu" and "VITRINE_INDEX_DEVICE=cpu" in placement.reason


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_auto_uses_the_gpu_when_the_kind_has_a_gpu_form_and_fits(kind: str) -> None:
    placement = choose_device("auto", gpus=1, kind=kind, index_bytes=3 * GiB, free_bytes=80 * GiB)
    assert placement.device == "cuda"
    assert kind in placement.reason and "80.0 GiB free" in placement.reason


def test_auto_without_a_gpu_searches_on_the_cpu_and_says_why() -> None:
    placement = choose_device("auto", gpus=0, kind="flat", index_bytes=1, free_bytes=None)
    assert placement.device == "cpu" and "no GPU" in placement.reason


def test_auto_with_hnsw_searches_on_the_cpu_it_has_no_gpu_form() -> None:
    placement = choose_device("auto", gpus=1, kind="hnsw", index_bytes=1, free_bytes=80 * GiB)
    assert placement.device == "cpu" and "no GPU form of a hnsw index" in placement.reason


def test_auto_keeps_an_index_that_does_not_fit_with_headroom_on_the_cpu() -> None:
    # The index alone would fit, but not with FAISS's scratch memory and the margin.
    free = 10 * GiB
    placement = choose_device("auto", gpus=1, kind="ivf", index_bytes=free - SCRATCH_BYTES, free_bytes=free)
    assert placement.device == "cpu" and "10.0 GiB are free" in placement.reason
    assert choose_device("auto", 1, "ivf", (free - SCRATCH_BYTES) // 2, free).device == "cuda"


def test_auto_with_unknown_free_memory_searches_on_the_cpu() -> None:
    placement = choose_device("auto", gpus=1, kind="flat", index_bytes=1, free_bytes=None)
    assert placement.device == "cpu" and "unknown" in placement.reason


def test_cuda_with_unknown_free_memory_tries_the_gpu() -> None:
    assert choose_device("cuda", gpus=1, kind="flat", index_bytes=1, free_bytes=None).device == "cuda"


@pytest.mark.parametrize(
    ("gpus", "kind", "index_bytes", "free_bytes", "why"),
    [
        (0, "flat", 1, None, "no GPU"),
        (1, "hnsw", 1, 80 * GiB, "no GPU form"),
        (1, "flat", 100 * GiB, 80 * GiB, "GiB are free"),
    ],
)
def test_cuda_is_the_gpu_or_a_clear_error(
    gpus: int, kind: str, index_bytes: int, free_bytes: int | None, why: str
) -> None:
    with pytest.raises(IndexDeviceError, match="VITRINE_INDEX_DEVICE=cuda, but") as error:
        choose_device("cuda", gpus, kind, index_bytes, free_bytes)
    assert why in str(error.value)


# The index with faiss-cpu ---------------------------------------------------------------------------


def test_auto_with_faiss_cpu_serves_from_the_cpu_and_reports_why(caplog: pytest.LogCaptureFixture) -> None:
    assert faiss.get_num_gpus() == 0  # this suite runs on faiss-cpu
    with caplog.at_level("INFO", logger="search.index.vector_index"):
        index = VectorIndex(DIM, "m", spec=IndexSpec(device="auto"))
    index.upsert(np.arange(1, 51), unit_rows(50, 0))
    facts = index.describe()
    assert facts["search_device"] == "cpu" and "no GPU" in facts["search_device_reason"]
    assert "searches on cpu: FAISS sees no GPU" in caplog.text
    assert index.search(unit_rows(50, 0)[7], 1)[0].id == 8


def test_cuda_with_faiss_cpu_fails_when_the_index_is_created_or_loaded(tmp_path: Path) -> None:
    with pytest.raises(IndexDeviceError, match="VITRINE_INDEX_DEVICE=cuda, but FAISS sees no GPU"):
        VectorIndex(DIM, "m", spec=IndexSpec(device="cuda"))
    saved = VectorIndex(DIM, "m", spec=IndexSpec(device="cpu"))
    saved.upsert(np.arange(1, 11), unit_rows(10, 1))
    saved.save(tmp_path / "index.faiss")
    with pytest.raises(IndexDeviceError):
        VectorIndex.load(tmp_path / "index.faiss", model="m", dim=DIM, spec=IndexSpec(device="cuda"))
    # The device is this process's choice, not the file's: it loads under any other setting.
    loaded = VectorIndex.load(tmp_path / "index.faiss", model="m", dim=DIM, spec=IndexSpec(device="auto"))
    assert len(loaded) == 10


def test_vitrine_index_device_is_a_typed_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITRINE_INDEX_DEVICE", raising=False)
    assert index_spec(Settings()).device == "auto"
    monkeypatch.setenv("VITRINE_INDEX_DEVICE", "cuda")
    assert index_spec(Settings()).device == "cuda"
    monkeypatch.setenv("VITRINE_INDEX_DEVICE", "gpu")
    with pytest.raises(ValidationError, match="index_device"):
        Settings()


def test_indexer_with_index_device_cuda_and_faiss_cpu_exits_with_one_clear_line(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = indexer_settings(tiny_model_dir, tmp_path / "data", index_device="cuda")
    result = run_indexer_in_process(settings, "stats")
    assert result.returncode == 1
    assert "error: VITRINE_INDEX_DEVICE=cuda, but FAISS sees no GPU" in result.stderr
    assert "Traceback" not in result.stderr


# Through the server's start-up ------------------------------------------------------------------------


def test_server_reports_where_its_index_searches(start_server) -> None:
    server = start_server()  # VITRINE_INDEX_DEVICE=auto, faiss-cpu
    index = server.client.get("/info").json()["index"]
    assert index["search_device"] == "cpu" and "no GPU" in index["search_device_reason"]


def test_server_with_index_device_cuda_and_faiss_cpu_fails_start_up_clearly(encoder, make_settings) -> None:
    app = create_app(make_settings(index_device="cuda"), encoder=encoder)
    server = LiveServer(app).start(wait_ready=False)
    try:
        deadline = time.monotonic() + 30
        while "INDEX_DEVICE" not in server.client.get("/ready").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        message = assert_error(server.client.get("/ready"), 503)
        assert "VITRINE_INDEX_DEVICE=cuda, but FAISS sees no GPU" in message
    finally:
        server.stop()


# The GPU copies' bookkeeping, with a CPU index standing in for the GPU one ---------------------------


def test_exact_copy_stays_in_step_with_upserts_removes_and_exclusions() -> None:
    vectors = unit_rows(400, 2)
    served, reference = ExactStore(DIM), ExactStore(DIM)
    for store in (served, reference):
        store.upsert(np.arange(1, 301), vectors[:300])
    served.to_gpu(device_copy=faiss.clone_index)
    changes = [
        ("upsert", np.arange(1, 41), vectors[300:340]),  # replaced: old slots dead
        ("remove", np.arange(100, 160), None),
        ("upsert", np.arange(500, 560), vectors[340:400]),  # new ids
    ]
    queries = np.concatenate([vectors[:5], vectors[300:305], unit_rows(5, 3)])
    for change, ids, rows in changes:
        for store in (served, reference):
            store.upsert(ids, rows) if change == "upsert" else store.remove(ids)
        assert served.gpu is not None and served.gpu.dead > 0
        for query in queries:
            for excluded in ([], [1, 2, 500, 77]):
                expected = reference.search(query[None], 10, None, excluded)[1]
                assert list(served.gpu.search(query[None], 10, excluded)[1]) == list(expected)
                assert list(served.search(query[None], 10, None, excluded)[1]) == list(expected)
        allowed = np.arange(150, 520)  # filtered: the CPU index answers
        assert list(served.search(queries[:1], 5, allowed, [])[1]) == list(
            reference.search(queries[:1], 5, allowed, [])[1]
        )


def test_exact_copy_is_made_afresh_once_many_slots_are_dead() -> None:
    store = ExactStore(DIM)
    store.upsert(np.arange(GpuFlat.COMPACT_AFTER + 10), unit_rows(GpuFlat.COMPACT_AFTER + 10, 4))
    store.to_gpu(device_copy=faiss.clone_index)
    store.remove(np.arange(GpuFlat.COMPACT_AFTER // 2))
    assert store.gpu is not None and store.gpu.dead == GpuFlat.COMPACT_AFTER // 2
    store.remove(np.arange(GpuFlat.COMPACT_AFTER + 5))
    assert store.gpu is not None and store.gpu.dead == 0 and len(store.gpu.slot_ids) == 5
    assert set(store.search(unit_rows(1, 5), 10, None, [])[1]) == set(range(GpuFlat.COMPACT_AFTER + 5, 1034))


def test_a_failing_gpu_copy_is_dropped_and_the_cpu_index_serves_everything() -> None:
    def broken_copy(index: faiss.Index) -> faiss.Index:  # a real FAISS error: adding to an untrained IVF
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 4, faiss.METRIC_INNER_PRODUCT)

    store = ExactStore(DIM)
    store.to_gpu(device_copy=broken_copy)
    store.upsert(np.arange(1, 21), unit_rows(20, 6))
    assert store.gpu is None and "is_trained" in (store.gpu_error or "")
    assert store.search(unit_rows(20, 6)[3:4], 1, None, [])[1][0] == 4


def test_ivf_copy_finds_what_the_cpu_index_finds_after_changes(tmp_path: Path) -> None:
    vectors = unit_rows(3000, 7)
    batches = (
        (np.arange(start + 1, start + 501), vectors[start : start + 500]) for start in range(0, 3000, 500)
    )
    spec = IndexSpec(kind="ivf", ivf_nlist=16, ivf_nprobe=4)
    store = IvfStore.build(DIM, spec, batches, tmp_path / "index.faiss")
    store.upsert(np.arange(1, 201), unit_rows(200, 8))  # 200 dead base slots, 200 in the side index
    store.remove(np.arange(1000, 1100))
    queries = np.concatenate([vectors[:10], vectors[1050:1055], vectors[1500:1503], unit_rows(10, 9)])
    cpu = {}
    for query_index, query in enumerate(queries):
        for excluded in ([], [5, 1501, 1502]):
            cpu[query_index, tuple(excluded)] = list(store.search(query[None], 10, None, excluded)[1])
    store.to_gpu(device_copy=faiss.clone_index)
    assert store.gpu is not None
    for query_index, query in enumerate(queries):
        for excluded in ([], [5, 1501, 1502]):
            found = store.search(query[None], 10, None, excluded)[1]
            assert list(found) == cpu[query_index, tuple(excluded)]
            assert not set(found) & ({5, 1501, 1502} if excluded else set())
            assert not set(found) & set(range(1000, 1100))
    assert store.gpu is not None  # no FAISS error dropped the copy on the way
    candidates = store._candidates(queries, 50, 4)
    assert candidates.shape == (len(queries), 50)
    assert not store.dead[candidates[candidates >= 0]].any()

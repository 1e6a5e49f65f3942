"""Each runtime adapter against the float32 torch reference on the tiny model, the export cache's
rebuilds, and what ``auto`` picks."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from devtools.random_model import write_random_model
from search.model.backends import candidates, load_backend
from search.model.backends.accuracy import probe_inputs
from search.model.backends.base import BackendUnavailable, RuntimeChoice, min_cosine
from search.model.backends.onnx_backend import OnnxBackend
from search.model.backends.torch_backend import TorchBackend
from search.model.encoder import Encoder
from search.model.weights import Checkpoint
from tests.support.images import patterned_image

pytest.importorskip("onnxruntime")
needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino is not installed"
)
needs_nncf = pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf is not installed")


@pytest.fixture(scope="module")
def inputs(encoder: Encoder) -> tuple[np.ndarray, np.ndarray]:
    """Real pictures and real texts through the encoder's own preprocessing and tokenizer."""
    pixels = encoder.preprocess([patterned_image(seed, size=(50 + seed, 40)) for seed in range(6)])
    ids = encoder.tokenize(["matte ceramic floor tile", "oak plank", "x", "a heat pump outdoor unit"])
    return pixels, ids


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, inputs) -> tuple[np.ndarray, np.ndarray]:
    runtime = TorchBackend.load(str(tiny_model_dir), RuntimeChoice("torch", "float32"))
    return runtime.image_features(inputs[0]), runtime.text_features(inputs[1])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory, first_openvino_int8) -> Path:
    """The module's export cache. Where OpenVINO is installed it starts as a copy of
    ``first_openvino_int8``'s: the int8 export and the float conversion it was compressed from are
    converted once per module (seconds each), and the adapters' checks below load them."""
    cache = tmp_path_factory.mktemp("exports")
    if first_openvino_int8 is not None:
        shutil.copytree(first_openvino_int8[0], cache, dirs_exist_ok=True)
    return cache


@pytest.mark.parametrize(
    ("runtime", "precision", "min_cos"),
    [
        ("torch", "bfloat16", 0.999),
        ("torch", "float16", 0.999),
        ("onnx", "float32", 0.99999),
        ("onnx", "int8", 0.999),
        pytest.param("openvino", "float32", 0.99999, marks=needs_openvino),
        pytest.param("openvino", "bfloat16", 0.999, marks=needs_openvino),
        pytest.param("openvino", "int8", 0.999, marks=[needs_openvino, needs_nncf]),
    ],
)
def test_runtime_adapter_matches_the_float32_torch_reference(
    tiny_model_dir, cache_dir, inputs, reference, runtime, precision, min_cos
):
    adapter = load_backend(str(tiny_model_dir), runtime=runtime, dtype=precision, cache_dir=cache_dir)
    assert adapter.choice == RuntimeChoice(runtime, precision)
    assert min_cosine(adapter.image_features(inputs[0]), reference[0]) >= min_cos
    assert min_cosine(adapter.text_features(inputs[1]), reference[1]) >= min_cos
    torch_reference = TorchBackend.load(str(tiny_model_dir), RuntimeChoice("torch", "float32"))
    assert adapter.logit_scale == pytest.approx(torch_reference.logit_scale, rel=1e-3)
    assert adapter.logit_bias == pytest.approx(torch_reference.logit_bias, abs=1e-3)


def test_onnx_batch_size_is_not_frozen_by_the_export(tiny_model_dir, cache_dir, inputs, reference):
    adapter = load_backend(str(tiny_model_dir), runtime="onnx", dtype="float32", cache_dir=cache_dir)
    for count in (1, 3, 6):
        assert min_cosine(adapter.image_features(inputs[0][:count]), reference[0][:count]) >= 0.99999


def test_an_export_records_its_accuracy_check_in_a_checksummed_manifest(tiny_model_dir, cache_dir):
    adapter = OnnxBackend.load(str(tiny_model_dir), RuntimeChoice("onnx", "int8"), cache_dir)
    manifest = adapter.export.manifest
    assert manifest["checkpoint"] == Checkpoint(str(tiny_model_dir)).export_key
    assert manifest["accepted"] is True and min(manifest["cosine"].values()) >= 0.999
    assert set(manifest["files"]) == {"vision.onnx", "text.onnx"}
    assert adapter.export.folder.parent.name == manifest["checkpoint"][:16]


@pytest.fixture
def own_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint that a test may change."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "checkpoint"))


@pytest.fixture
def built_exports(tiny_model_dir: Path, cache_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the module's export cache holding every accepted export of the tiny checkpoint
    (the same bytes as ``own_checkpoint``, so the same key): a test of what ``auto`` chooses among
    stored exports need not convert the checkpoint again (seconds each; converting is tested above)."""
    for choice in candidates("auto", "auto", "cpu"):
        if choice.runtime != "torch":
            load_backend(
                str(tiny_model_dir), runtime=choice.runtime, dtype=choice.precision, cache_dir=cache_dir
            )
    return Path(shutil.copytree(cache_dir, tmp_path / "cache"))


@pytest.fixture(scope="module")
def first_openvino_int8(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """(an export cache in which OpenVINO int8 of the tiny checkpoint was the first thing built, so its
    float conversion too; the threads that forked meanwhile), or None without OpenVINO and NNCF.
    Converting and compressing take seconds; the tests that look at such a first build copy the cache."""
    import os
    import threading

    if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None:
        return None
    forks: list[str] = []
    watching = threading.Event()
    os.register_at_fork(
        before=lambda: forks.append(threading.current_thread().name) if watching.is_set() else None
    )
    cache = tmp_path_factory.mktemp("first-openvino-int8")
    watching.set()
    try:
        load_backend(str(tiny_model_dir), runtime="openvino", dtype="int8", cache_dir=cache)
    finally:
        watching.clear()
    return cache, forks


def build_stamp(export_folder: Path) -> float:
    return (export_folder / "manifest.json").stat().st_mtime_ns


def test_a_truncated_export_is_detected_and_rebuilt_never_served(own_checkpoint, tmp_path, inputs, reference):
    cache = tmp_path / "cache"
    first = OnnxBackend.load(str(own_checkpoint), RuntimeChoice("onnx", "float32"), cache)
    folder, stamp = first.export.folder, build_stamp(first.export.folder)
    again = OnnxBackend.load(str(own_checkpoint), RuntimeChoice("onnx", "float32"), cache)
    assert build_stamp(again.export.folder) == stamp  # a verified export is reused, not rebuilt
    vision = folder / "vision.onnx"
    vision.write_bytes(vision.read_bytes()[: vision.stat().st_size // 2])
    rebuilt = OnnxBackend.load(str(own_checkpoint), RuntimeChoice("onnx", "float32"), cache)
    assert build_stamp(rebuilt.export.folder) != stamp
    assert vision.stat().st_size == rebuilt.export.manifest["files"]["vision.onnx"]["size"]
    assert min_cosine(rebuilt.image_features(inputs[0]), reference[0]) >= 0.99999


def test_an_altered_or_partial_export_is_rebuilt(own_checkpoint, tmp_path):
    cache = tmp_path / "cache"
    first = OnnxBackend.load(str(own_checkpoint), RuntimeChoice("onnx", "float32"), cache)
    text = first.export.folder / "text.onnx"
    data = bytearray(text.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    text.write_bytes(bytes(data))
    stamp = build_stamp(first.export.folder)
    assert build_stamp(OnnxBackend.load(str(own_checkpoint), first.choice, cache).export.folder) != stamp
    (first.export.folder / "manifest.json").unlink()  # as a crash between files and manifest would leave
    again = OnnxBackend.load(str(own_checkpoint), first.choice, cache)
    assert (again.export.folder / "manifest.json").is_file()
    assert not [p for p in again.export.folder.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_a_changed_checkpoint_gets_a_new_export(own_checkpoint, tmp_path, inputs):
    cache = tmp_path / "cache"
    before = OnnxBackend.load(str(own_checkpoint), RuntimeChoice("onnx", "float32"), cache)
    write_random_model("tiny", own_checkpoint, seed=1)  # new weights in the same folder
    after = OnnxBackend.load(str(own_checkpoint), RuntimeChoice("onnx", "float32"), cache)
    assert after.export.folder != before.export.folder
    assert after.export.manifest["checkpoint"] == Checkpoint(str(own_checkpoint)).export_key
    new_reference = TorchBackend.load(str(own_checkpoint), RuntimeChoice("torch", "float32"))
    assert min_cosine(after.image_features(inputs[0]), new_reference.image_features(inputs[0])) >= 0.99999


def test_an_export_that_failed_its_accuracy_check_is_refused_and_auto_falls_back(
    own_checkpoint, built_exports
):
    cache = built_exports
    export = OnnxBackend.load(str(own_checkpoint), RuntimeChoice("onnx", "int8"), cache).export
    manifest = json.loads((export.folder / "manifest.json").read_text())
    manifest.update(accepted=False, cosine={"image": 0.98, "text": 0.99})  # as a model that quantises badly
    (export.folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendUnavailable, match="refused"):
        OnnxBackend.load(str(own_checkpoint), RuntimeChoice("onnx", "int8"), cache)
    chosen = load_backend(str(own_checkpoint), runtime="auto", dtype="auto", cache_dir=cache)
    assert chosen.choice != RuntimeChoice("onnx", "int8")
    assert chosen.choice in candidates("auto", "auto", "cpu")


def test_auto_on_cpu_serves_the_fastest_choice_that_passes_its_check(own_checkpoint, built_exports):
    chosen = load_backend(str(own_checkpoint), runtime="auto", dtype="auto", cache_dir=built_exports)
    assert chosen.choice == candidates("auto", "auto", "cpu")[0]
    assert chosen.export.accepted


def test_choices_follow_the_settings():
    assert candidates("torch", "float32", "cpu") == [RuntimeChoice("torch", "float32")]
    assert candidates("auto", "bfloat16", "cpu") == [RuntimeChoice("torch", "bfloat16")]
    assert candidates("auto", "int8", "cpu") == [
        RuntimeChoice("openvino", "int8"),
        RuntimeChoice("onnx", "int8"),
    ]
    assert candidates("openvino", "auto", "cpu")[0] == RuntimeChoice("openvino", "int8")
    assert candidates("onnx", "auto", "cpu")[0] == RuntimeChoice("onnx", "int8")
    assert candidates("openvino", "float32", "cpu") == [RuntimeChoice("openvino", "float32")]
    assert RuntimeChoice("torch", "float32") not in candidates("auto", "auto", "cpu")  # the last resort
    assert candidates("auto", "float16", "cuda") == [RuntimeChoice("torch", "float16", "cuda")]
    with pytest.raises(BackendUnavailable):
        candidates("onnx", "auto", "cuda")


def test_probe_inputs_are_fixed(encoder: Encoder):
    a, b = probe_inputs(encoder.config), probe_inputs(encoder.config)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape[1:] == (3, 32, 32) and a[1].shape[1] == 64


def test_indexer_export_model_builds_the_chosen_export(own_checkpoint, tmp_path, monkeypatch, capsys):
    from indexer.__main__ import main

    monkeypatch.setenv("VITRINE_MODEL", str(own_checkpoint))
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VITRINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VITRINE_DEVICE", "cpu")
    monkeypatch.setenv("VITRINE_RUNTIME", "onnx")
    monkeypatch.setenv("VITRINE_DTYPE", "int8")
    with pytest.raises(SystemExit) as exit_:
        main(["export-model"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "runtime onnx, int8, cpu" in out and "cosine to float32: image 0.99" in out
    folder = tmp_path / "cache" / "exports" / Checkpoint(str(own_checkpoint)).export_key[:16] / "onnx-int8"
    assert (folder / "manifest.json").is_file()


def test_a_server_start_reads_each_checkpoint_file_once(own_checkpoint, tmp_path, monkeypatch):
    """The export cache's key and the catalog's embedding space come from one hashing of the files."""
    import search.model.weights
    from search.wiring import Components
    from tests.support.settings import settings_for

    hashed: list[Path] = []
    real_sha256 = search.model.weights.sha256_file

    def counting_sha256(path: Path) -> str:
        hashed.append(Path(path).resolve())
        return real_sha256(path)

    monkeypatch.setattr(search.model.weights, "sha256_file", counting_sha256)
    settings = settings_for(own_checkpoint, tmp_path / "data", runtime="onnx", dtype="float32")
    runtime = Components.start(settings, with_catalog=True)
    from_checkpoint = [path for path in hashed if path.parent == own_checkpoint.resolve()]
    try:
        assert runtime.served_space is not None
        assert runtime.served_space.key == Checkpoint(own_checkpoint).fingerprint
        assert runtime.encoder.backend.export.manifest["checkpoint"] == Checkpoint(own_checkpoint).export_key
    finally:
        runtime.close()
    assert sorted(set(from_checkpoint)) == sorted(from_checkpoint)  # none twice
    assert own_checkpoint.resolve() / "model.safetensors" in from_checkpoint


@needs_openvino
@needs_nncf
def test_openvino_int8_stores_int8_weights_and_quantises_activations_at_run_time(tiny_model_dir, cache_dir):
    import openvino as ov

    from search.model.backends.openvino_backend import DYNAMIC_QUANTIZATION_GROUP, compile_config

    adapter = load_backend(str(tiny_model_dir), runtime="openvino", dtype="int8", cache_dir=cache_dir)
    for tower in ("vision.xml", "text.xml"):
        ir = ov.Core().read_model(str(adapter.export.path(tower)))
        constants = [op for op in ir.get_ops() if op.get_type_name() == "Constant"]
        int8 = [op for op in constants if op.get_element_type() == ov.Type.i8]
        assert len(int8) >= 4, tower  # every matmul's weights (and the embeddings), not just a few
    manifest = adapter.export.manifest
    assert manifest["accepted"] is True and min(manifest["cosine"].values()) >= 0.999
    assert compile_config("int8", None)["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == DYNAMIC_QUANTIZATION_GROUP
    assert "DYNAMIC_QUANTIZATION_GROUP_SIZE" not in compile_config("bfloat16", None)


@needs_openvino
@needs_nncf
def test_openvino_int8_is_compressed_from_the_float_conversion_auto_falls_back_to(
    own_checkpoint, first_openvino_int8, tmp_path, monkeypatch, inputs
):
    """The checkpoint is converted once: int8 compresses the float conversion and keeps it, so a refused
    int8 falls back without converting again (minutes on base-512), and a rebuilt int8 reuses it."""
    import search.model.backends.openvino_backend as openvino_runtime

    cache = Path(shutil.copytree(first_openvino_int8[0], tmp_path / "cache"))  # built from empty
    int8 = load_backend(str(own_checkpoint), runtime="openvino", dtype="int8", cache_dir=cache)
    fallback = openvino_runtime.float_fallback()
    assert sorted(p.name for p in int8.export.folder.parent.iterdir()) == sorted(
        ["openvino-int8", f"openvino-{fallback}"]
    )
    assert not [p for p in int8.export.folder.iterdir() if p.is_dir()]  # no scratch folder kept

    def no_export(*args: object) -> None:
        raise AssertionError("the checkpoint was converted again")

    monkeypatch.setattr(openvino_runtime, "_convert", no_export)
    shutil.rmtree(int8.export.folder)
    rebuilt = load_backend(str(own_checkpoint), runtime="openvino", dtype="int8", cache_dir=cache)
    reference = TorchBackend.load(str(own_checkpoint), RuntimeChoice("torch", "float32"))
    assert min_cosine(rebuilt.image_features(inputs[0]), reference.image_features(inputs[0])) >= 0.999
    floats = load_backend(str(own_checkpoint), runtime="openvino", dtype=fallback, cache_dir=cache)
    assert min_cosine(floats.image_features(inputs[0]), reference.image_features(inputs[0])) >= 0.999


@pytest.mark.parametrize(
    ("runtime", "precision"),
    [
        ("torch", "bfloat16"),
        ("onnx", "float32"),
        pytest.param("openvino", "bfloat16", marks=needs_openvino),
        pytest.param("openvino", "int8", marks=[needs_openvino, needs_nncf]),
    ],
)
def test_a_batch_of_concurrent_requests_on_each_runtime_matches_float32_alone(
    encoder: Encoder, tiny_model_dir, cache_dir, runtime, precision
):
    """Each request of a shared forward pass gets its own rows, in order, within 0.999 of what float32
    gives it alone."""
    from concurrent.futures import ThreadPoolExecutor

    from search.model.encoder import BatchSettings

    adapter = load_backend(str(tiny_model_dir), runtime=runtime, dtype=precision, cache_dir=cache_dir)
    batched = Encoder(
        adapter,
        encoder.processor,
        encoder.config,
        model_id="tiny",
        batching=BatchSettings(image_batch=8, text_batch=16, max_wait_ms=500),
    )
    sizes = [1, 2, 3, 1, 2, 3]  # pictures per request, each picture different
    seeds = iter(range(sum(sizes)))
    pictures = [[patterned_image(next(seeds), size=(48, 36)) for _ in range(n)] for n in sizes]
    texts = [["matte ceramic floor tile", "oak"], ["a heat pump outdoor unit"], ["x", "grey stone", "glossy"]]
    try:
        with ThreadPoolExecutor(len(pictures) + len(texts)) as pool:
            image_futures = [pool.submit(batched.embed_images, group) for group in pictures]
            text_futures = [pool.submit(batched.embed_texts, group) for group in texts]
        for group, future in zip(pictures, image_futures, strict=True):
            got, alone = future.result(), encoder.embed_images(group)
            assert got.shape == alone.shape
            assert (np.sum(got * alone, axis=1) >= 0.999).all()
        for group, future in zip(texts, text_futures, strict=True):
            got, alone = future.result(), encoder.embed_texts(group)
            assert got.shape == alone.shape
            assert (np.sum(got * alone, axis=1) >= 0.999).all()
        assert batched.images_queue.stats.batches < len(pictures)  # shared passes, not one per request
        # Rows that swapped places would be caught: no two inputs are within 0.999 of each other.
        every_picture = [picture for group in pictures for picture in group]
        every_text = [text for group in texts for text in group]
        for rows in (encoder.embed_images(every_picture), encoder.embed_texts(every_text)):
            similar = rows @ rows.T
            np.fill_diagonal(similar, 0)
            assert similar.max() < 0.999
    finally:
        batched.close()


@needs_openvino
@needs_nncf
def test_an_openvino_export_sends_no_telemetry_and_forks_no_process(first_openvino_int8):
    """OpenVINO's and NNCF's usage telemetry (openvino_telemetry) forks the converting process to send
    each event to Google Analytics: from a server holding the checkpoint, over the network."""
    import sys

    _, forks = first_openvino_int8  # while the checkpoint was converted, then compressed to int8
    assert forks == []
    assert sys.modules["openvino_telemetry"] is None
    from openvino.tools.ovc import telemetry_utils

    assert telemetry_utils.tm.__name__ == "openvino.tools.ovc.telemetry_stub"

"""Large collections: the memory-mapped feature cache, sharded extraction, neighbours and
k-means at scale, and the on-disk image store give what the in-memory paths give."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from deepclust.cluster.kmeans_at_scale import kmeans_rows
from deepclust.cluster.neighbours import (
    UnitRows,
    exact_knn_of_sample,
    nearest_neighbours,
    neighbour_graph,
    recall_at_k,
)
from deepclust.data.store import ImageSet
from deepclust.encoders import build_encoder
from deepclust.encoders import cache as feature_cache
from deepclust.encoders.feature_file import open_mapped, write_from_chunks
from dist_harness import run_in_processes


def tiny_images(n: int = 10, size: int = 16, seed: int = 0) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    return ImageSet(images, torch.arange(n) % 2, ["a", "b"])


def tiny_encoder():
    torch.manual_seed(0)
    return build_encoder("timm:resnet10t", 16, weights="random", input_size=16)


def clustered(n: int, dim: int = 32, centres: int = 20, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mu = 4 * torch.randn(centres, dim, generator=gen)
    return mu[torch.randint(centres, (n,), generator=gen)] + torch.randn(n, dim, generator=gen)


def test_streamed_feature_file_reads_back_with_safetensors_and_mapped(tmp_path):
    parts = [torch.randn(4, 3), torch.randn(2, 3)]
    files = []
    for i, p in enumerate(parts):
        files.append(tmp_path / f"{i}.safetensors")
        save_file({"features": p}, str(files[-1]))
    target = tmp_path / "all.safetensors"
    write_from_chunks(target, "features", files, (6, 3), metadata={"seconds": "1.5"})
    assert torch.equal(load_file(str(target))["features"], torch.cat(parts))
    mapped = open_mapped(target, "features")
    assert torch.equal(mapped, torch.cat(parts))
    mapped += 1  # copy-on-write: the file keeps its values
    assert torch.equal(open_mapped(target, "features"), torch.cat(parts))
    with pytest.raises(ValueError, match="hold 72 bytes, not 96"):
        write_from_chunks(tmp_path / "bad.safetensors", "features", files, (8, 3))
    assert not (tmp_path / "bad.safetensors").exists()


def test_cached_features_are_mapped_and_equal_the_in_memory_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_cache, "CHUNK", 4)
    enc, data = tiny_encoder(), tiny_images()
    monkeypatch.setenv("DEEPCLUST_NO_CACHE", "1")
    before = feature_cache.extract_features(enc, data, batch_size=3, progress=False)
    monkeypatch.delenv("DEEPCLUST_NO_CACHE")
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path))
    cold = feature_cache.extract_features(enc, data, batch_size=3, progress=False)
    warm = feature_cache.extract_features(enc, data, batch_size=3, progress=False)
    assert torch.equal(cold, before) and torch.equal(warm, before)
    assert not warm.untyped_storage().resizable()  # backed by the file's mapping, not a fresh copy
    assert not list((tmp_path / "features").glob("*.partial"))


def _sharded(rank: int, cache: str, photos: str) -> tuple[torch.Tensor, torch.Tensor]:
    import os
    import warnings

    from deepclust.data import disk_store
    from deepclust.data.datasets import load_split

    os.environ.update(DEEPCLUST_CACHE=cache, DEEPCLUST_STORE_MB="0")
    feature_cache.CHUNK, disk_store.CHUNK = 4, 3
    feats = feature_cache.extract_features(
        build_encoder("pixels", 16), tiny_images(n=14), batch_size=2, progress=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unreadable photo
        store = load_split("photos", "train", photos, image_size=8)
    return feats.clone(), store.images.clone()


def test_two_processes_share_extraction_and_decoding(tmp_path, monkeypatch):
    from deepclust.data.datasets import load_split

    monkeypatch.setattr(feature_cache, "CHUNK", 4)
    assert feature_cache.chunk_share(14, 0, 2) == [0, 2]
    assert feature_cache.chunk_share(14, 1, 2) == [1, 3]
    photos = _photo_folder(tmp_path)
    two = run_in_processes(_sharded, 2, str(tmp_path / "two"), str(photos))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each spawned process runs
    try:
        monkeypatch.setenv("DEEPCLUST_NO_CACHE", "1")
        one = feature_cache.extract_features(
            build_encoder("pixels", 16), tiny_images(n=14), batch_size=2, progress=False
        )
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(two[0][0], one) and torch.equal(two[1][0], one)
    (joined,) = (tmp_path / "two" / "features").glob("*.safetensors")
    with safe_open(str(joined), framework="pt") as f:  # the joined file records both processes
        assert f.metadata()["processes"] == "2"
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        memory = load_split("photos", "train", photos, image_size=8)
    assert torch.equal(two[0][1], memory.images) and torch.equal(two[1][1], memory.images)


def test_exact_neighbours_below_the_threshold_are_todays():
    x = clustered(300)
    x[7] = x[3]  # a duplicate: each keeps itself first
    graph = neighbour_graph(x, 5, centre=True)
    unit = F.normalize(x - x.mean(dim=0), dim=1)
    sim = unit @ unit.T
    sim.fill_diagonal_(float("inf"))
    assert graph.exact and torch.equal(graph.indices, sim.topk(5, dim=1).indices)
    assert torch.equal(nearest_neighbours(x, 5, chunk=7, centre=True), graph.indices)


def test_approximate_neighbours_measure_their_recall(capsys):
    x = clustered(6000, centres=30).half()
    graph = neighbour_graph(x, 10, exact_max=1000, sample=300, recall_target=0.95)
    assert not graph.exact and graph.recall is not None and graph.recall >= 0.95
    assert torch.equal(graph.indices[:, 0], torch.arange(6000))
    check = torch.arange(0, 6000, 7)
    truth = exact_knn_of_sample(UnitRows(x, centre=False), check, 10)
    assert recall_at_k(graph.indices[check], truth) >= 0.9
    assert "approximate (faiss IVF" in graph.describe()


def test_kmeans_at_scale_finds_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    mu = 10 * torch.randn(8, 16, generator=gen)
    truth = torch.arange(4000) % 8
    x = mu[truth] + torch.randn(4000, 16, generator=gen)
    for spherical in (True, False):
        res = kmeans_rows(x, 8, seed=0, spherical=spherical, points_per_centroid=100)
        pairs = torch.stack([truth, res.labels], 1).unique(dim=0)
        assert len(pairs) == 8  # each true cluster is one found cluster
        assert res.centroids.shape == (8, 16) and res.inertia >= 0


def _photo_folder(root, n: int = 7):
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        pixels = torch.randint(0, 256, (12, 10, 3), dtype=torch.uint8, generator=gen)
        Image.fromarray(pixels.numpy()).save(root / f"p{i}.png")
    (root / "p3.png").write_bytes(b"not a png")  # left out, with a warning, in both stores
    return root


def test_disk_store_equals_the_memory_store_and_resumes(tmp_path, monkeypatch):
    from deepclust.data import disk_store, readers
    from deepclust.data.datasets import load_split

    photos = _photo_folder(tmp_path)
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        memory = load_split("photos", "train", photos, image_size=8)
    assert not disk_store.on_disk(len(memory), 8)
    monkeypatch.setenv("DEEPCLUST_STORE_MB", "0")
    assert disk_store.on_disk(len(memory), 8)
    monkeypatch.setattr(disk_store, "CHUNK", 3)
    decode, calls = readers.decode_files, []

    def killed_at_the_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return decode(*args, **kwargs)

    monkeypatch.setattr(readers, "decode_files", killed_at_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        load_split("photos", "train", photos, image_size=8)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        disk = load_split("photos", "train", photos, image_size=8)
    assert len(calls) == 4  # the first chunk was not decoded again
    assert torch.equal(disk.images, memory.images) and disk.paths == memory.paths
    assert not disk.images.untyped_storage().resizable()  # the file's mapping


def test_a_store_too_large_for_memory_without_a_cache_is_one_clear_error(monkeypatch):
    from deepclust.data import disk_store
    from deepclust.errors import DataError

    monkeypatch.setenv("DEEPCLUST_STORE_MB", "1")
    monkeypatch.setenv("DEEPCLUST_NO_CACHE", "1")
    assert not disk_store.on_disk(100, 32)  # 0.3 MiB fits
    with pytest.raises(DataError, match=r"1,000 images at 64 px need 0.01 GiB.*DEEPCLUST_NO_CACHE"):
        disk_store.on_disk(1000, 64)


def test_a_frozen_run_predicts_the_same_from_the_mapped_cache_as_from_memory(tmp_path, monkeypatch):
    from deepclust import api

    overrides = {
        "encoder.name": "pixels",
        "encoder.input_size": None,
        "encoder.neighbours": 5,
        "train.epochs": 1,
        "train.max_steps_per_epoch": 3,
        "train.min_steps": 0,
        "train.progress": False,
    }
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path / "cache"))
    cfg = api.make_config("imc-swav", "digits", "frozen", overrides)
    mapped = api.train(cfg, out=tmp_path / "mapped")
    monkeypatch.setenv("DEEPCLUST_NO_CACHE", "1")
    memory = api.train(cfg, out=tmp_path / "memory")
    assert (tmp_path / "mapped" / "predictions.csv").read_text() == (
        tmp_path / "memory" / "predictions.csv"
    ).read_text()
    assert mapped.summary["metrics"] == memory.summary["metrics"]
    assert mapped.summary["neighbour_graph"]["exact"] is True


def test_a_run_on_an_approximate_graph_records_its_recall(tmp_path, monkeypatch, capsys):
    from deepclust import api
    from deepclust.cluster import neighbours

    monkeypatch.setattr(neighbours, "EXACT_MAX", 500)  # digits' 1,797 rows go to faiss
    monkeypatch.setenv("DEEPCLUST_NO_CACHE", "1")
    overrides = {
        "encoder.name": "pixels",
        "encoder.input_size": None,
        "encoder.neighbours": 5,
        "train.epochs": 1,
        "train.max_steps_per_epoch": 2,
        "train.min_steps": 0,
        "train.progress": False,
    }
    cfg = api.make_config("imc-swav", "digits", "frozen", overrides)
    graph = api.train(cfg, out=tmp_path / "run").summary["neighbour_graph"]
    assert graph["exact"] is False and graph["rows"] == 1797 and graph["k"] == 5
    assert 0.95 <= graph["recall_at_k"] <= 1 and graph["recall_queries"] == 1797
    assert 1 <= graph["lists_probed"] <= graph["lists"]
    assert f"recall@5 {graph['recall_at_k']:.3f}" in capsys.readouterr().out


def test_chunks_a_process_cannot_see_are_one_clear_error(tmp_path, monkeypatch):
    from deepclust.errors import DataError

    monkeypatch.setattr(feature_cache, "CHUNK", 4)
    save_file({"features": torch.zeros(4, 2)}, str(tmp_path / "00000.safetensors"))
    with pytest.raises(DataError, match=r"00001.safetensors are missing .* DEEPCLUST_CACHE"):
        feature_cache._chunk_files(tmp_path, 6)

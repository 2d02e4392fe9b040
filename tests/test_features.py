"""lusv.data.features: frozen-encoder features computed once, reused, invalidated, rebuilt when damaged;
heads on cached features equal the full model with a frozen encoder."""

import copy
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from videos import make_frames, tiny_clip_table, write_test_video

from lusv.data.cache import CacheError, ClipCache
from lusv.data.model_input import ClipAugment, to_model_input
from lusv.errors import ConfigError, LabelsError
from lusv.data.datasets import FeatureDataset, collate_features
from lusv.data.features import FeatureCache
from lusv.models import build_model
from lusv.data.patterns import PATTERNS

T, S = 4, 16
IDS = ["long", "other", "short"]


@pytest.fixture()
def clip_cache(tmp_path):
    """Three tiny clips in a clip cache; 'short' has 3 real frames of T = 4 (padding is covered)."""
    labels = tiny_clip_table(tmp_path / "videos", {"long.mp4": 10, "other.avi": 8, "short.avi": 3})
    cache = ClipCache(tmp_path / "clips", T, S)
    cache.build(labels, progress=False)
    cache.labels = labels  # for the tests that change a source video
    return cache


def _table(ids=IDS):
    labels = np.array([[1, 0, np.nan, 1], [0, 1, 0, 0], [1, 1, 0, np.nan]], dtype=np.float32)[: len(ids)]
    return pd.DataFrame({"clip_id": ids, **{p: labels[:, i] for i, p in enumerate(PATTERNS)}})


def _model(name="luvnet", seed=0, **cfg):
    torch.manual_seed(seed)
    return build_model(name, encoder="tiny", weights="random", num_heads=4, kernel_size=3, **cfg)


def _reference_features(encoder, clip_cache, clip_id):
    """The encoder's output on the clip as the full model receives it (eval mode), independently."""
    clip, _ = clip_cache.load(clip_id)
    encoder.eval()
    with torch.no_grad():
        return encoder.encode_clips(to_model_input(torch.from_numpy(clip)[None], "cpu"))[0].numpy()


def _features(clip_cache, encoder, tmp_path, **kw):
    return FeatureCache(clip_cache, encoder, encoder_name="tiny", root=tmp_path / "features", **kw)


# ---------------------------------------------------------------- computing and reusing


def test_features_are_the_frozen_encoders_output_stored_once_and_reused(clip_cache, tmp_path):
    model = _model()
    model.train()  # the cache must compute in eval mode and give the mode back
    features = _features(clip_cache, model.encoder, tmp_path)
    report = features.build(IDS, progress=False)
    assert report.table["status"].tolist() == ["ingested"] * 3
    assert model.encoder.training
    assert features.dir.parent == tmp_path / "features" and features.dir.name.startswith("tiny_T4_S16_whole_float16-")
    assert len(list((features.dir / "features").glob("*.npy"))) == 3
    for clip_id in IDS:
        stored, length = features.load(clip_id)
        assert stored.shape == (T, 32) and stored.dtype == np.float16
        np.testing.assert_allclose(stored, _reference_features(model.encoder, clip_cache, clip_id), rtol=2e-3, atol=2e-3)
        assert length == (3 if clip_id == "short" else T)

    mtimes = {p: p.stat().st_mtime_ns for p in (features.dir / "features").glob("*.npy")}
    again = _features(clip_cache, model.encoder, tmp_path)  # a new process: reads the manifest
    assert again.dir == features.dir
    assert again.build(IDS, progress=False).table["status"].tolist() == ["cached"] * 3
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_float32_storage_is_exact(clip_cache, tmp_path):
    encoder = _model().encoder
    features = _features(clip_cache, encoder, tmp_path, dtype="float32")
    features.build(IDS, progress=False)
    stored, _ = features.load("short")
    assert stored.dtype == np.float32
    np.testing.assert_allclose(stored, _reference_features(encoder, clip_cache, "short"), rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="dtype 'float64'"):
        _features(clip_cache, encoder, tmp_path, dtype="float64")


def test_any_change_of_encoder_weights_or_setting_gets_its_own_folder(clip_cache, tmp_path):
    encoder = _model(seed=0).encoder
    base = _features(clip_cache, encoder, tmp_path).dir
    assert _features(clip_cache, _model(seed=0).encoder, tmp_path).dir == base  # same weights: same folder
    assert _features(clip_cache, _model(seed=1).encoder, tmp_path).dir != base  # another random init
    trained = copy.deepcopy(encoder)
    with torch.no_grad():
        trained.backbone[0].weight[0, 0, 0, 0] += 1e-3
    assert _features(clip_cache, trained, tmp_path).dir != base
    assert _features(clip_cache, encoder, tmp_path, clip_policy="windows").dir != base
    assert _features(clip_cache, encoder, tmp_path, dtype="float32").dir != base
    other_size = ClipCache(tmp_path / "clips", T, 24)
    assert _features(other_size, encoder, tmp_path).dir != base
    # Augmentation settings only name the augmented views; the plain features are shared.
    assert _features(clip_cache, encoder, tmp_path, seed=5).dir == base


def test_a_changed_clip_is_recomputed(clip_cache, tmp_path):
    encoder = _model().encoder
    _features(clip_cache, encoder, tmp_path, dtype="float32").build(IDS, progress=False)
    write_test_video(clip_cache.labels.loc[1, "path"], make_frames(8, seed=42))  # 'other' edited
    ingest = clip_cache.build(clip_cache.labels, progress=False).table.set_index("clip_id")["status"]
    assert ingest["other"] == "rebuilt"
    features = _features(clip_cache, encoder, tmp_path, dtype="float32")
    report = features.build(IDS, progress=False)
    assert report.table["status"].tolist() == ["cached", "rebuilt", "cached"]
    assert report.table.loc[1, "reason"] == "clip changed" and report.table.loc[1, "detail"].startswith("plain: clip changed")
    np.testing.assert_allclose(features.load("other")[0], _reference_features(encoder, clip_cache, "other"), atol=1e-6)


def _damage(path, how):
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:-20])
    elif how == "bad header":
        path.write_bytes(b"not an npy file" + path.read_bytes()[15:])
    elif how == "unbalanced header dict":  # numpy's header parser raises tokenize.TokenError here
        data = path.read_bytes()
        start = data.index(b"'descr'")
        path.write_bytes(data[:start] + b"((((((((" + data[start + 8:])
    elif how == "edited":
        array = np.load(path)
        array[0, 0] += 1
        np.save(path, array)
    elif how == "wrong shape":
        np.save(path, np.zeros((T, 5), dtype=np.float16))
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "bad header", "unbalanced header dict", "edited", "wrong shape", "deleted"])
def test_a_damaged_entry_is_recomputed_never_a_crash(clip_cache, tmp_path, how, caplog):
    encoder = _model().encoder
    features = _features(clip_cache, encoder, tmp_path)
    features.build(IDS, progress=False)
    original, _ = features.load("long")
    entry = features.dir / "features" / features.manifest.set_index("clip_id").loc["long", "entry"]
    _damage(entry, how)
    if how != "edited":  # an edit keeps a valid array; only build's checksum check sees it
        with pytest.raises(CacheError, match="missing or damaged: run FeatureCache.build"):
            features.load("long")
    with caplog.at_level(logging.WARNING):
        report = _features(clip_cache, encoder, tmp_path).build(IDS, progress=False)
    assert report.table["status"].tolist() == ["rebuilt", "cached", "cached"]
    assert "entry damaged" in report.table.loc[0, "detail"]
    assert "recomputed features of clip 'long'" in caplog.text
    np.testing.assert_array_equal(_features(clip_cache, encoder, tmp_path).load("long")[0], original)


@pytest.mark.parametrize("content", [b"", b"\xff\xfe garbage \x00", b"clip_id,view\nlong,plain\n"])
def test_an_unreadable_manifest_or_identity_means_recompute(clip_cache, tmp_path, content, caplog):
    encoder = _model().encoder
    features = _features(clip_cache, encoder, tmp_path)
    features.build(IDS, progress=False)
    features.manifest_path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert _features(clip_cache, encoder, tmp_path).build(IDS, progress=False).table["status"].tolist() == (
            ["ingested"] * 3)
    assert "every feature will be computed again" in caplog.text or content == b""
    features.identity_path.write_text("{broken", encoding="utf-8")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = _features(clip_cache, encoder, tmp_path)
    assert "identity.json does not describe" in caplog.text and len(again) == 0
    assert again.build(IDS, progress=False).table["status"].tolist() == ["ingested"] * 3


def test_clips_missing_from_the_clip_cache_are_skipped_and_none_at_all_is_an_error(clip_cache, tmp_path):
    features = _features(clip_cache, _model().encoder, tmp_path)
    report = features.build(["long", "ghost"], progress=False)
    assert report.table["status"].tolist() == ["ingested", "skipped"]
    assert report.table.loc[1, "reason"] == "no clip cache entry"
    with pytest.raises(CacheError, match="no features for any of 1 clip"):
        features.build(["ghost"], progress=False)
    with pytest.raises(CacheError, match="no features of clip 'ghost'"):
        features.load("ghost")


def test_in_memory_entries_are_read_once_checked_and_dropped_when_recomputed(clip_cache, tmp_path):
    encoder = _model().encoder
    features = _features(clip_cache, encoder, tmp_path, in_memory=True)
    features.build(IDS, views=1, progress=False)
    expected = {cid: _reference_features(encoder, clip_cache, cid) for cid in IDS}
    for entry in (features.dir / "features").iterdir():
        entry.unlink()  # the epochs after build read no file
    for clip_id in IDS:
        stored, length = features.load(clip_id)
        np.testing.assert_allclose(stored.astype(np.float32), expected[clip_id], rtol=1e-3, atol=1e-4)
        assert not stored.flags.writeable  # shared by every batch: nobody may change it
    assert features.load_many(IDS, [features.view_names(1)[1]] * 3)[0].shape == (3, T, encoder.feature_dim)

    # An entry edited on disk is served as read but never held: once it is gone, load says so.
    rebuilt = _features(clip_cache, encoder, tmp_path, in_memory=True)
    rebuilt.build(IDS, progress=False)  # recomputes the deleted plain entries
    fresh = _features(clip_cache, encoder, tmp_path, in_memory=True)
    rows = fresh.manifest
    entry = fresh.dir / "features" / rows.loc[(rows["clip_id"] == "long") & (rows["view"] == "plain"), "entry"].item()
    _damage(entry, "edited")
    fresh.load("long")
    entry.unlink()
    with pytest.raises(CacheError, match="missing or damaged"):
        fresh.load("long")

    # A clip whose source changed is recomputed by build, and load then gives the new features.
    write_test_video(clip_cache.labels.loc[1, "path"], make_frames(8, seed=42))  # 'other' edited
    clip_cache.build(clip_cache.labels, progress=False)
    changed = _reference_features(encoder, clip_cache, "other")
    assert np.abs(changed - expected["other"]).max() > 1e-3
    rebuilt.build(IDS, progress=False)
    np.testing.assert_allclose(rebuilt.load("other")[0].astype(np.float32), changed, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- augmented views


def test_augmented_views_are_seeded_per_clip_and_view_and_added_incrementally(clip_cache, tmp_path):
    encoder = _model().encoder
    features = _features(clip_cache, encoder, tmp_path, dtype="float32", seed=3)
    assert features.view_names(0) == ["plain"]
    views = features.view_names(2)
    assert views[0] == "plain" and views[1].endswith("-1") and views[2].endswith("-2")
    features.build(IDS, views=1, progress=False)
    assert len(features) == 6
    report = features.build(IDS, views=2, progress=False)  # only view 2 is new
    assert report.table["status"].tolist() == ["ingested"] * 3
    assert report.table["detail"].tolist() == [f"computed views {views[2]}"] * 3
    plain, first, second = (features.load("long", view)[0] for view in views)
    assert not np.allclose(plain, first) and not np.allclose(first, second)

    # Independently: view 1 of 'long' is ClipAugment applied with its own seeded generator.
    alone = _features(clip_cache, encoder, tmp_path / "alone", dtype="float32", seed=3)
    alone.build(["long"], views=1, progress=False)
    np.testing.assert_array_equal(alone.load("long", views[1])[0], first)
    other_seed = _features(clip_cache, encoder, tmp_path, dtype="float32", seed=4)
    assert other_seed.view_names(1)[1] != views[1]
    other_augment = _features(clip_cache, encoder, tmp_path, augment=ClipAugment(flip_p=1.0))
    assert other_augment.view_names(1)[1] != views[1]
    with pytest.raises(ConfigError, match="must be >= 0"):
        features.view_names(-1)


def test_the_same_video_under_two_ids_gets_its_own_augmented_views(tmp_path):
    """Views are drawn per clip: two clips with the same frames get the same plain features and
    different augmented ones (a seed missing the clip id would give every clip the same draws)."""
    import shutil

    labels = tiny_clip_table(tmp_path / "videos", {"first.mp4": 4})
    shutil.copy(labels.loc[0, "path"], tmp_path / "videos" / "second.mp4")  # the same file under another id
    labels = pd.concat([labels, labels.assign(clip_id="second", path=str(tmp_path / "videos" / "second.mp4"))],
                       ignore_index=True)
    cache = ClipCache(tmp_path / "clips", T, S)
    cache.build(labels, progress=False)
    features = _features(cache, _model().encoder, tmp_path, dtype="float32", seed=3)
    features.build(["first", "second"], views=2, progress=False)
    plain, aug = features.view_names(2)[0], features.view_names(2)[1:]
    np.testing.assert_array_equal(features.load("first", plain)[0], features.load("second", plain)[0])
    for view in aug:
        assert not np.allclose(features.load("first", view)[0], features.load("second", view)[0]), view


# ---------------------------------------------------------------- dataset


def test_feature_dataset_batches_mirror_clip_dataset(clip_cache, tmp_path):
    features = _features(clip_cache, _model().encoder, tmp_path)
    features.build(IDS, views=2, progress=False)
    dataset = FeatureDataset(features, _table(), views=0)
    batch = dataset.__getitems__([2, 0])
    assert set(batch) == {"features", "lengths", "labels", "clip_ids"}
    assert batch["features"].shape == (2, T, 32) and batch["features"].dtype == torch.float32
    assert batch["lengths"].tolist() == [3, T] and batch["lengths"].dtype == torch.int64
    assert batch["clip_ids"] == ["short", "long"] and torch.isnan(batch["labels"][0, 3])
    np.testing.assert_array_equal(batch["features"][1].numpy(), features.load("long")[0].astype(np.float32))
    items = collate_features([dataset[2], dataset[0]])
    for key in ("features", "lengths", "labels"):
        torch.testing.assert_close(items[key], batch[key], equal_nan=True)
    assert collate_features(batch) == batch

    augmented = FeatureDataset(features, _table(), views=2, seed=7)
    aug_names = set(features.view_names(2)[1:])
    draws = []
    for epoch in range(6):
        augmented.set_epoch(epoch)
        assert set(augmented.views) <= aug_names  # training draws augmented views only
        draws.append(list(augmented.views))
    assert len({tuple(d) for d in draws}) > 1  # the view changes between epochs
    augmented.set_epoch(3)
    assert augmented.views == draws[3]  # and is reproducible
    with pytest.raises(LabelsError, match="lacks column"):
        FeatureDataset(features, pd.DataFrame({"clip_id": IDS}))


# ---------------------------------------------------------------- equivalence with the full model


@pytest.mark.parametrize("name, cfg", [("luvnet", {}), ("luvnet_no_temporal", {}), ("usvn", {"pooling": "attention"}),
                                       ("usvn", {"pooling": "max"}), ("cnn_lstm", {"hidden_size": 16})])
def test_heads_on_cached_features_equal_the_full_model_in_eval_mode(clip_cache, tmp_path, name, cfg):
    model = _model(name, **cfg).eval()
    clips, lengths = clip_cache.load_many(IDS)
    with torch.no_grad():
        full = model(to_model_input(torch.from_numpy(clips), "cpu"), torch.from_numpy(lengths))
    for dtype, tolerance in (("float32", 1e-5), ("float16", 5e-3)):
        features = _features(clip_cache, model.encoder, tmp_path, dtype=dtype)
        features.build(IDS, progress=False)
        batch = FeatureDataset(features, _table()).__getitems__([0, 1, 2])
        with torch.no_grad():
            cached = model.forward_features(batch["features"], batch["lengths"])
        assert set(cached) == set(full)
        for key in full:
            torch.testing.assert_close(cached[key], full[key], atol=tolerance, rtol=0)


def test_a_head_trained_on_cached_features_equals_training_with_a_frozen_encoder(clip_cache, tmp_path):
    """Three Adam steps with dropout: the cached path and the frozen-encoder path stay equal."""
    start = _model("luvnet", dropout=0.5)
    clips, lengths = clip_cache.load_many(IDS)
    x, lengths = to_model_input(torch.from_numpy(clips), "cpu"), torch.from_numpy(lengths)
    labels = torch.tensor(_table()[list(PATTERNS)].to_numpy())
    features = _features(clip_cache, start.encoder, tmp_path, dtype="float32")
    features.build(IDS, progress=False)
    h = FeatureDataset(features, _table()).__getitems__([0, 1, 2])["features"]

    def train(forward, model):
        model.train()
        model.encoder.eval()  # frozen: eval-mode BatchNorm, no gradient
        model.encoder.requires_grad_(False)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        torch.manual_seed(11)  # the heads' dropout masks
        for _ in range(3):
            logits = forward(model)["logits"]
            known = ~torch.isnan(labels)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], labels[known])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            return forward(model)["logits"]

    full = train(lambda m: m(x, lengths), copy.deepcopy(start))
    cached = train(lambda m: m.forward_features(h, lengths), copy.deepcopy(start))
    untrained = copy.deepcopy(start).eval()(x, lengths)["logits"].detach()
    assert not torch.allclose(full, untrained, atol=1e-3)  # training moved the outputs
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)

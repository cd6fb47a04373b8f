"""kit.training.pipeline: shapes, dtypes, record order, switchable augmentation, PCam-safe preset, exact TTA views,
oversampling."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kit.training import pipeline as P
from kit.data import records
from kit.training.config import Config
from kit.core.errors import KitError
from records_fixture import write_records


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recs")
    manifest = write_records(folder, n_folds=3, per_fold=12, size=32, meta=True)
    return folder, sorted(folder.glob("*.tfrec")), manifest


def _cfg(**kw) -> Config:
    base = dict(size=32, n_classes=2, batch=8, meta=True, meta_numeric=("age",), meta_categorical={"sex": 2},
                augment="none", seed=1)
    base.update(kw)
    return Config(**base)


def _decoded(paths) -> np.ndarray:
    """Every image of ``paths`` read one by one in file order, the slow obvious way."""
    out = []
    for p in paths:
        for raw in tf.data.TFRecordDataset(str(p)):
            ex = tf.io.parse_single_example(raw, {"image": tf.io.FixedLenFeature([], tf.string)})
            out.append(tf.io.decode_png(ex["image"]).numpy())
    return np.stack(out)


def test_train_batches_shapes_dtypes_and_drop_remainder(recs):
    _, paths, _ = recs
    ds = P.train_dataset(paths, _cfg())
    batches = list(ds.take(6))  # endless: 36 records give 4 full batches per pass, then it repeats
    for inputs, target in batches:
        assert set(inputs) == {"image", "meta"}
        # no host augmentation: the pixels go to the model as decoded, uint8 (the model casts)
        assert inputs["image"].shape == (8, 32, 32, 3) and inputs["image"].dtype == tf.uint8
        assert inputs["meta"].shape == (8, 3) and inputs["meta"].dtype == tf.float32
        assert target.shape == (8,) and target.dtype == tf.float32
        assert set(np.unique(target.numpy())) <= {0.0, 1.0}
    img = batches[0][0]["image"].numpy()
    assert img.min() >= 0 and img.max() <= 255 and img.max() > 1  # 0..255, not rescaled


def test_images_stay_uint8_until_something_changes_their_values(recs):
    _, paths, _ = recs
    cfg = _cfg()
    assert next(iter(P.valid_dataset(paths, cfg)))[0]["image"].dtype == tf.uint8
    for view in ("identity", "hflip", "transpose"):  # exact views only move pixels
        assert next(iter(P.predict_dataset(paths, cfg, view, batch=8)))["image"].dtype == tf.uint8
    # host augmentation and seeded random views resample and recolour: float32 0..255
    augmented = next(iter(P.train_dataset(paths, cfg.replace(augment="default"))))[0]["image"]
    assert augmented.dtype == tf.float32 and 0 <= float(tf.reduce_min(augmented)) <= float(tf.reduce_max(augmented)) <= 255
    assert next(iter(P.predict_dataset(paths, cfg, 9, batch=8)))["image"].dtype == tf.float32


def test_multiclass_targets_are_int_class_indices(tmp_path):
    write_records(tmp_path, n_folds=2, per_fold=10, size=32, n_classes=5)
    paths = sorted(tmp_path.glob("*.tfrec"))
    inputs, target = next(iter(P.valid_dataset(paths, Config(size=32, n_classes=5, batch=20, augment="none"))))
    assert set(inputs) == {"image"}
    assert target.dtype == tf.int32 and target.shape == (20,)
    assert set(target.numpy().tolist()) <= set(range(5))


def test_validation_keeps_record_order_and_last_batch(recs):
    _, paths, _ = recs
    cfg = _cfg()
    batches = list(P.valid_dataset(paths, cfg))
    assert [int(t.shape[0]) for _, t in batches] == [8, 8, 8, 8, 4]
    images = np.concatenate([b[0]["image"].numpy() for b in batches])
    np.testing.assert_array_equal(images, _decoded(paths))
    targets = np.concatenate([b[1].numpy() for b in batches])
    table = P.record_table(paths)
    assert table["image_name"].tolist()[:3] == ["img_0_000", "img_0_001", "img_0_002"]
    assert table["image_name"].tolist()[-1] == "img_2_011"
    np.testing.assert_array_equal(targets, table["target"].to_numpy(np.float32))
    # the order follows the paths as given
    rev = np.concatenate([b["image"].numpy() for b in P.predict_dataset(paths[::-1], cfg, "identity", batch=5)])
    np.testing.assert_array_equal(rev, _decoded(paths[::-1]))


def test_augmentation_none_leaves_images_untouched(recs):
    _, paths, _ = recs
    ref = {img.tobytes() for img in _decoded(paths)}
    inputs, _ = next(iter(P.train_dataset(paths, _cfg(augment="none"))))
    assert all(img.tobytes() in ref for img in inputs["image"].numpy())
    on, _ = next(iter(P.train_dataset(paths, _cfg(augment="default"))))
    assert not any(img.tobytes() in ref for img in on["image"].numpy())


def test_each_part_switches_on_alone():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(60, 190, size=(16, 32, 32, 3)).astype(np.float32))
    u = tf.random.stateless_uniform([16, 11], seed=[3, 4])
    # all draws at 0.5 are the identity for every part
    full = P.resolve_augment("default")
    np.testing.assert_allclose(P.augment_batch(x, tf.fill([16, 11], 0.5), full).numpy(), x.numpy(), atol=1e-3)
    # flips only: each image is itself or its mirror, both occur
    out = P.augment_batch(x, u, P.resolve_augment("none", {"hflip": True})).numpy()
    same = [np.allclose(o, i, atol=1e-3) for o, i in zip(out, x.numpy())]
    flipped = [np.allclose(o, i[:, ::-1], atol=1e-3) for o, i in zip(out, x.numpy())]
    assert all(s or f for s, f in zip(same, flipped)) and any(same) and any(flipped)
    # brightness only: a constant shift per image
    out = P.augment_batch(x, u, P.resolve_augment("none", {"brightness": 0.2})).numpy()
    diff = (out - x.numpy()).reshape(16, -1)
    assert np.allclose(diff.std(axis=1), 0, atol=1e-3) and np.abs(diff.mean(axis=1)).max() > 5
    # contrast only: per-image mean kept, spread changed
    out = P.augment_batch(x, u, P.resolve_augment("none", {"contrast": 0.3})).numpy()
    np.testing.assert_allclose(out.mean(axis=(1, 2)), x.numpy().mean(axis=(1, 2)), atol=0.5)
    assert np.abs(out.std(axis=(1, 2, 3)) / x.numpy().std(axis=(1, 2, 3)) - 1).max() > 0.02
    # rotation only: pixels move
    out = P.augment_batch(x, u, P.resolve_augment("none", {"rotation": 30.0})).numpy()
    assert not np.allclose(out, x.numpy(), atol=1.0)


@pytest.mark.parametrize("options", [{}, {"zoom": 0.6, "shift": 0.4}])  # the second reflects more than once
def test_gather_warp_equals_tensorflows_projective_transform(options):
    aug = P.resolve_augment("default", {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0, **options})
    assert aug.interpolation == "nearest" and aug.fill == "reflect"  # the presets take the gather path
    images = tf.constant(np.random.default_rng(1).integers(0, 256, (32, 48, 48, 3), dtype=np.uint8))
    u = tf.random.stateless_uniform([32, 11], seed=[5, 6])
    ours = P.augment_batch(images, u, aug).numpy()
    theirs = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=P.affine_transforms(u, aug, 48), output_shape=[48, 48], fill_value=0.0,
        interpolation="NEAREST", fill_mode="REFLECT").numpy()
    # the two differ only where a source coordinate lies exactly half way between two pixels
    assert (ours == theirs).all(axis=-1).mean() > 0.999
    assert not (ours == images.numpy()).all()


def test_augment_options_are_checked():
    assert P.resolve_augment("pcam", {"hue": 0.0}).hue == 0.0
    with pytest.raises(KitError, match="unknown part 'blur'"):
        P.resolve_augment("default", {"blur": 1.0})
    with pytest.raises(KitError, match="unknown preset 'wild'"):
        P.resolve_augment("wild")


def test_pcam_preset_keeps_the_centre_in_view():
    aug = P.resolve_augment("pcam")
    assert aug.centre_reach() < 0.5
    size, c = 96, 32
    img = np.zeros((size, size, 3), np.float32)
    img[c:2 * c, c:2 * c] = 255.0  # the labelled centre 32x32
    # random draws plus every extreme of rotation, shear, zoom and shift (the worst cases)
    extremes = np.array([[0.5, 0.5, r, s, z, dx, dy, 0.5, 0.5, 0.5, 0.5]
                         for r, s, z, dx, dy in itertools.product([0, 0.125, 0.875, 1], [0, 1], [0, 1], [0, 1], [0, 1])])
    u = np.concatenate([np.random.default_rng(0).uniform(size=(128, 11)), extremes]).astype(np.float32)
    geo = P.resolve_augment(aug, {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0,
                                  "fill": "constant"})
    out = P.augment_batch(tf.constant(np.repeat(img[None], len(u), 0)), tf.constant(u), geo).numpy()[..., 0]
    marked = out > 127
    # zoom 0.9..1.1 scales the area by at most 0.81; interpolation trims a little at the edges
    assert marked.sum(axis=(1, 2)).min() >= 0.7 * c * c
    border = np.ones((size, size), bool)
    border[8:-8, 8:-8] = False
    assert not marked[:, border].any()
    # the default preset without limits on shift would push it out: the check above is not vacuous
    wild = P.resolve_augment("none", {"shift": 0.5, "fill": "constant"})
    out = P.augment_batch(tf.constant(np.repeat(img[None], len(u), 0)), tf.constant(u), wild).numpy()[..., 0]
    assert (out > 127).sum(axis=(1, 2)).min() < 0.5 * c * c


def test_tta_views_are_exact(recs):
    _, paths, _ = recs
    cfg = _cfg()
    views = {v: np.concatenate([b["image"].numpy() for b in P.predict_dataset(paths, cfg, v, batch=7)])
             for v in P.TTA_VIEWS}
    x = views["identity"]
    np.testing.assert_array_equal(views["hflip"], x[:, :, ::-1])
    np.testing.assert_array_equal(views["vflip"], x[:, ::-1])
    np.testing.assert_array_equal(views["rot90"], np.rot90(x, 1, axes=(1, 2)))
    np.testing.assert_array_equal(views["rot180"], np.rot90(x, 2, axes=(1, 2)))
    np.testing.assert_array_equal(views["rot270"], np.rot90(x, 3, axes=(1, 2)))
    np.testing.assert_array_equal(views["transpose"], x.transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(views["transverse"], x.transpose(0, 2, 1, 3)[:, ::-1, ::-1])
    assert len({v.tobytes() for v in views.values()}) == 8
    # index 1 is "hflip"; metadata rides along unchanged
    b = next(iter(P.predict_dataset(paths, cfg, 1, batch=36)))
    np.testing.assert_array_equal(b["image"].numpy(), views["hflip"])
    assert b["meta"].shape == (36, 3)


def test_random_tta_views_are_seeded_per_image(recs):
    _, paths, _ = recs
    cfg = _cfg(augment="default")
    names = P.record_table(paths)["image_name"].tolist()

    def by_name(ps, view, batch):
        imgs = np.concatenate([b["image"].numpy() for b in P.predict_dataset(ps, cfg, view, batch=batch)])
        return dict(zip(P.record_table(ps)["image_name"], imgs))

    a, b = by_name(paths, 8, 5), by_name(paths[::-1], 8, 36)
    assert all(np.array_equal(a[n], b[n]) for n in names)
    c = by_name(paths, 9, 5)
    assert not any(np.array_equal(a[n], c[n]) for n in names)
    with pytest.raises(KitError, match="unknown view 'sideways'"):
        P.predict_dataset(paths, cfg, "sideways")


def test_oversampling_reaches_the_requested_fraction(tmp_path):
    write_records(tmp_path, n_folds=2, per_fold=40, size=32, positives=0.1, signal=0.5)
    paths = sorted(tmp_path.glob("*.tfrec"))
    natural = P.record_table(paths)["target"].mean()
    assert natural < 0.2
    cfg = Config(size=32, n_classes=2, batch=32, augment="none", oversample=0.5, shuffle_buffer=64, seed=3)
    targets = np.concatenate([t.numpy() for _, t in P.train_dataset(paths, cfg).take(30)])
    assert abs(targets.mean() - 0.5) < 0.06
    with pytest.raises(KitError, match="oversample"):
        P.make_dataset(paths, size=32, batch=4, training=True, n_classes=5, oversample=0.5)


def test_device_augmentation_is_identity_at_inference():
    import keras

    inp = {"image": keras.Input((32, 32, 3), name="image")}
    out = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(inp["image"]))
    model = keras.Model(inp, out)
    wrapped = P.with_device_augmentation(model, P.resolve_augment("default"), seed=0)
    names = [layer.__class__.__name__ for layer in wrapped.layers]
    assert {"RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomBrightness"} <= set(names)
    x = {"image": np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")}
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)
    assert not np.allclose(wrapped(x, training=True), model(x, training=False), rtol=1e-3)
    # the host hands uint8 batches when it does not augment: the random layers get them as float32
    pixels = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(wrapped.predict({"image": pixels}, verbose=0),
                               model.predict({"image": pixels.astype("float32")}, verbose=0), rtol=1e-5)
    assert not np.allclose(wrapped({"image": pixels}, training=True), model({"image": pixels}, training=False), rtol=1e-3)


def test_jpeg_records_decode_to_the_pixels_pillow_gives(tmp_path):
    """libjpeg's accurate IDCT, as Pillow (the writer, an ImageStream) decodes: TensorFlow's fast default is off by up to 5."""
    write_records(tmp_path, n_folds=2, per_fold=8, size=32, fmt="jpeg")
    paths = sorted(tmp_path.glob("*.tfrec"))
    cfg = Config(size=32, n_classes=2, batch=8, augment="none")
    assert P._is_jpeg(records.as_images([str(p) for p in paths]).manifest)
    inputs, target = next(iter(P.train_dataset(paths, cfg)))
    assert inputs["image"].shape == (8, 32, 32, 3) and inputs["image"].dtype == tf.uint8
    valid = np.concatenate([b[0]["image"].numpy() for b in P.valid_dataset(paths, cfg)])
    ref = []
    for p in paths:
        for raw in tf.data.TFRecordDataset(str(p)):
            ex = tf.io.parse_single_example(raw, {"image": tf.io.FixedLenFeature([], tf.string)})
            ref.append(np.asarray(Image.open(io.BytesIO(ex["image"].numpy())).convert("RGB")))
    np.testing.assert_array_equal(valid, np.stack(ref))


def test_datasets_read_once_through_are_deterministic_and_not_autotuned(tmp_path):
    """Deleting an autotuned iterator can wait for the autotuner's sleep (seconds, at random): not for these."""
    write_records(tmp_path, n_folds=2, per_fold=8, size=32, fmt="jpeg")
    paths = sorted(tmp_path.glob("*.tfrec"))
    cfg = Config(size=32, n_classes=2, batch=8, augment="none")
    for ds in (P.predict_dataset(paths, cfg), P.valid_dataset(paths, cfg)):
        assert ds.options().autotune.enabled is False and ds.options().deterministic is True
    assert P.train_dataset(paths, cfg).options().autotune.enabled is not False  # training keeps its tuning

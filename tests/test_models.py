"""kit.training.models: the registry, heads, metadata branch, local weights, EfficientNet conversion, JAX."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest

from kit.training import backbones, models
from kit.core.errors import KitError

EXPECTED = {
    "efficientnet_b0": 224, "efficientnet_b1": 240, "efficientnet_b2": 260, "efficientnet_b3": 300,
    "efficientnet_b4": 380, "efficientnet_b5": 456, "efficientnet_b6": 528, "efficientnet_b7": 600,
    "efficientnet_v2_b0": 224, "efficientnet_v2_b1": 240, "efficientnet_v2_b2": 260,
    "efficientnet_v2_b3": 300, "efficientnet_v2_s": 384, "efficientnet_v2_m": 480,
    "efficientnet_v2_l": 480, "resnet50": 224, "vgg16": 224, "vgg19": 224,
    "convnext_tiny": 224, "convnext_small": 224, "convnext_base": 224,
    "compact_cnn": 64, "small_cnn": 64, "pcam_cnn": 96, "tiny_cnn": 32,
    "keras_hub": 224, "hub_efficientnet": 224, "hub_vit": 224, "hub_dinov2": 224,
}
# Built and run here (a small size); the rest are only checked to be registered with a default size.
CHEAP = {"compact_cnn": 32, "tiny_cnn": 32, "small_cnn": 32, "pcam_cnn": 64, "efficientnet_b0": 32, "resnet50": 32,
         "convnext_tiny": 32}


def _images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, 3)).astype("float32")


def _predict(model, inputs):
    return keras.ops.convert_to_numpy(model(inputs, training=False))


@pytest.mark.parametrize("name", ["tiny_cnn", "efficientnet_b0"])
def test_models_take_uint8_images_as_the_same_pixels_in_float32(name):
    # kit's pipeline hands uint8 batches to the model wherever nothing changed the pixels
    pixels = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    model = models.build_model(name, n_classes=2, size=32)
    as_uint8 = model.predict({"image": pixels}, verbose=0)
    as_float = model.predict({"image": pixels.astype("float32")}, verbose=0)
    np.testing.assert_allclose(as_uint8, as_float, rtol=1e-6, atol=1e-7)
    if name == "tiny_cnn":  # (a randomly initialised EfficientNet maps every image to about the same output)
        assert len(np.unique(as_float.round(6))) == 4  # four images, four outputs: the pixels got through


def test_registry_names_and_default_sizes():
    assert backbones.list_models() == sorted(EXPECTED)
    for name in backbones.list_models():
        assert backbones.default_size(name) == EXPECTED[name], name


def test_every_row_of_the_table_has_one_builder_and_every_builder_a_row():
    # kit.training.backbones (no Keras, for `kit models`) and kit.training.models (the builders) describe the same backbones
    assert len(backbones._ROWS) == len(backbones.BACKBONES)  # no name twice
    assert sorted(models._BACKBONES) == backbones.list_models()
    for name, row in backbones.BACKBONES.items():
        spec = models.backbone_spec(name)
        assert (spec.name, spec.size, spec.family, spec.params, spec.hub_class) == (
            row.name, row.size, row.family, row.params, row.hub_class), name
        assert (spec.preprocess is models.CaffePreprocess) == (row.family in ("resnet", "vgg")), name
    with pytest.raises(KitError, match=r"^model: unknown model 'resnet51'; known: compact_cnn, convnext_base, "):
        models.backbone_spec("resnet51")
    with pytest.raises(KitError, match=r"^model: unknown model 'resnet51'"):
        models.register("resnet51")  # a builder needs its row in kit.training.backbones first


@pytest.mark.parametrize("name", sorted(CHEAP))
def test_cheap_backbones_binary_and_multiclass_heads(name):
    size = CHEAP[name]
    x = {"image": _images(3, size)}
    binary = models.build_model(name, n_classes=2, size=size)
    assert [t.name for t in binary.inputs] == ["image"]
    p = _predict(binary, x)
    assert p.shape == (3, 1) and p.dtype == np.float32
    assert np.all((p > 0) & (p < 1))
    assert binary.get_layer("head").activation.__name__ == "sigmoid"
    if "cnn" not in name:
        return  # one build of each large backbone is enough; the head code is shared
    multi = models.build_model(name, n_classes=7, size=size, dropout=0.0)
    q = _predict(multi, x)
    assert q.shape == (3, 7)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
    assert multi.get_layer("head").activation.__name__ == "softmax"


def test_head_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        m = models.build_model("tiny_cnn", n_classes=7, size=32, n_meta=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert m.get_layer("backbone").get_layer("tiny_conv0").compute_dtype == "float16"
    out = m({"image": _images(2, 32), "meta": np.zeros((2, 2), "float32")}, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out).sum(axis=1), 1.0, rtol=1e-5)


def test_kit_models_cli_prints_the_table_and_json(capsys):
    from kit.cli.app import main

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "family", "size", "params", "weights"]
    assert [line.split()[0] for line in lines[1:]] == sorted(EXPECTED)
    assert "efficientnet_b0     efficientnet      224    4.05M  none,file,imagenet" in lines
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == sorted(EXPECTED)
    assert rows["tiny_cnn"] == {"name": "tiny_cnn", "family": "cnn", "size": 32, "params": 6200,
                                "weights": ["none", "file"]}
    assert rows["keras_hub"]["params"] is None and rows["keras_hub"]["weights"] == ["preset"]
    assert rows["convnext_tiny"]["weights"] == ["none", "file", "imagenet"]


@pytest.mark.parametrize("name", ["tiny_cnn", "small_cnn", "pcam_cnn", "efficientnet_b0", "efficientnet_v2_b0",
                                  "resnet50", "vgg16", "convnext_tiny"])
def test_table_parameter_counts_are_the_built_backbones(name):
    # the table states counts instead of building 21 backbones (~40 s) on every `kit models`
    size = backbones.default_size(name)
    built = models.build_model(name, n_classes=2, size=size).get_layer("backbone")
    assert built.count_params() == models.backbone_spec(name).params


def test_imagenet_families():
    assert backbones.is_imagenet_family("efficientnet_b0") and backbones.is_imagenet_family("convnext_base")
    assert backbones.is_imagenet_family("keras_hub") and backbones.is_imagenet_family("vgg16")
    assert not backbones.is_imagenet_family("tiny_cnn") and not backbones.is_imagenet_family("pcam_cnn")


def test_tiny_cnn_is_tiny_and_small_cnn_is_the_seed_shape():
    assert 2_000 < models.build_model("tiny_cnn", n_classes=2, size=32).count_params() < 10_000
    seed = models.build_model("small_cnn", n_classes=7, size=64, dropout=0.5)
    # 2x conv32, 2x conv64, dense 128 on a 16x16x64 flatten, softmax 7: the seed notebook's counts.
    expected = (3 * 9 * 32 + 32) + (32 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 9 * 64 + 64) \
        + (16 * 16 * 64 * 128 + 128) + (128 * 7 + 7)
    assert seed.count_params() == expected


def test_metadata_branch_joins_image_features():
    m = models.build_model("tiny_cnn", n_classes=2, size=32, n_meta=3)
    assert [t.name for t in m.inputs] == ["image", "meta"]
    img = _images(4, 32)
    a = _predict(m, {"image": img, "meta": np.zeros((4, 3), "float32")})
    b = _predict(m, {"image": img, "meta": np.full((4, 3), 5.0, "float32")})
    assert a.shape == (4, 1) and not np.allclose(a, b)  # the meta input reaches the head
    assert m.get_layer("join_meta").output.shape[-1] == 32 + 16
    assert isinstance(m.get_layer("meta_bn"), keras.layers.BatchNormalization)  # raw ages, 0/1 codes


def test_frozen_backbone_and_batchnorm_frozen_when_fine_tuning(tmp_path):
    frozen = models.build_model("tiny_cnn", n_classes=2, size=32, trainable_backbone=False)
    assert [w.path for w in frozen.trainable_weights] == ["head/kernel", "head/bias"]
    scratch = models.build_model("tiny_cnn", n_classes=2, size=32)
    assert len(scratch.trainable_weights) == 3 + 3 * 2 + 2  # conv kernels, BN gamma/beta, head: all train
    path = tmp_path / "tiny.weights.h5"
    scratch.get_layer("backbone").save_weights(str(path))
    tuned = models.build_model("tiny_cnn", n_classes=2, size=32, weights=path)
    backbone = tuned.get_layer("backbone")
    for a, b in zip(backbone.weights, scratch.get_layer("backbone").weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    bn = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bn) == 3 and not any(layer.trainable for layer in bn)
    assert [w.path for w in tuned.trainable_weights] == [
        "tiny_conv0/kernel", "tiny_conv1/kernel", "tiny_conv2/kernel", "head/kernel", "head/bias"]


def test_bad_names_and_weights_files(tmp_path):
    with pytest.raises(KitError, match=r"unknown model 'effnet_b0'; known: compact_cnn, convnext_base, .*efficientnet_b0, .*tiny_cnn"):
        models.build_model("effnet_b0", n_classes=2, size=32)
    with pytest.raises(KitError, match="nope.h5: weights file not found"):
        models.build_model("tiny_cnn", n_classes=2, size=32, weights=tmp_path / "nope.h5")
    path = tmp_path / "tiny.weights.h5"
    models.build_model("tiny_cnn", n_classes=2, size=32).get_layer("backbone").save_weights(str(path))
    with pytest.raises(KitError, match=r"tiny.weights.h5: weights do not fit small_cnn at 32px"):
        models.build_model("small_cnn", n_classes=2, size=32, weights=path)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(KitError, match="junk.h5: weights do not fit tiny_cnn at 32px"):
        models.build_model("tiny_cnn", n_classes=2, size=32, weights=junk)
    with pytest.raises(KitError, match="n_classes must be >= 2"):
        models.build_model("tiny_cnn", n_classes=1, size=32)


def test_saved_model_reloads_and_predicts_the_same(tmp_path):
    m = models.build_model("tiny_cnn", n_classes=7, size=32, n_meta=2)
    sched = models.RampExpDecay(lr_start=1e-4, lr_max=1e-3, lr_min=1e-5, ramp_epochs=1,
                                sustain_epochs=0, decay=0.8, steps_per_epoch=5)
    m.compile(optimizer=keras.optimizers.Adam(sched), loss="sparse_categorical_crossentropy")
    x = {"image": _images(2, 32), "meta": np.ones((2, 2), "float32")}
    m.train_on_batch(x, np.array([0, 3]))  # builds the optimizer state that the file then carries
    m.save(tmp_path / "best.keras")
    back = keras.saving.load_model(tmp_path / "best.keras")  # custom objects: `import kit.training.models`
    np.testing.assert_allclose(_predict(back, x), _predict(m, x), rtol=1e-6)
    assert isinstance(back.optimizer._learning_rate, models.RampExpDecay)
    assert back.optimizer._learning_rate.get_config() == sched.get_config()


def test_caffe_preprocess_matches_keras_and_serializes():
    x = _images(2, 8)
    layer = models.CaffePreprocess()
    ref = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), ref, rtol=1e-5)
    back = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(back, models.CaffePreprocess)


def _randomize(model, seed):
    """Perturb every weight (BN statistics too) so a wrong mapping cannot hide behind defaults."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization) or not layer.weights:
            continue
        new = []
        for w in layer.weights:
            v = keras.ops.convert_to_numpy(w)
            if "variance" in w.path:
                v = rng.uniform(0.5, 1.5, v.shape)
            elif w.path.endswith(("gamma", "beta", "moving_mean", "bias")):
                v = v + rng.normal(0, 0.1, v.shape)
            else:
                v = v * rng.uniform(0.8, 1.2, v.shape)
            new.append(v.astype("float32"))
        layer.set_weights(new)


def _write_legacy_h5(model, path):
    """A Keras 2 style .h5 weights file, the format of the keras.applications and efficientnet files."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def test_keras_applications_file_predicts_like_weights_imagenet(tmp_path, monkeypatch):
    size = 64
    src = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(size, size, 3),
                                            pooling="avg")
    _randomize(src, seed=1)
    # As in the published files: the ImageNet std sits where the variance belongs.
    norm = next(layer for layer in src.layers if isinstance(layer, keras.layers.Normalization))
    norm.set_weights([np.array(models.IMAGENET_MEAN_RGB, "float32"),
                      np.array(models.IMAGENET_STD_RGB, "float32"), np.array(0, "int64")])
    path = tmp_path / "efficientnetb0_notop.h5"
    _write_legacy_h5(src, path)

    # Reference: keras.applications' own weights="imagenet" route, fed our file instead of a download.
    from keras.src.applications import efficientnet as app

    monkeypatch.setattr(app.file_utils, "get_file", lambda *a, **k: str(path))
    ref = app.EfficientNetB0(include_top=False, weights="imagenet", input_shape=(size, size, 3),
                             pooling="avg")
    x = _images(2, size, seed=5)
    ref_features = _predict(ref, x)

    model = models.build_model("efficientnet_b0", n_classes=2, size=size, weights=path, dropout=0.0)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in model.get_layer("head").weights)
    expected = 1 / (1 + np.exp(-(ref_features @ kernel + bias)))
    np.testing.assert_allclose(_predict(model, {"image": x}), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_predict(model.get_layer("backbone"), x), ref_features,
                               rtol=1e-4, atol=1e-4)
    # The plain file route (what kit corrects) divides by sqrt(std) instead of std, feeding the stem
    # about half the ImageNet-normalised input (std ~0.23, sqrt(std) ~0.48):
    # compare right after the first convolution, where the deep net cannot wash the difference out.
    naive = keras.applications.EfficientNetB0(include_top=False, weights=str(path),
                                              input_shape=(size, size, 3), pooling="avg")

    def stem(m):
        return _predict(keras.Model(m.input, m.get_layer("stem_conv").output), x)

    np.testing.assert_allclose(stem(model.get_layer("backbone")), stem(ref), rtol=1e-4, atol=1e-4)
    ratio = np.abs(stem(naive)).mean() / np.abs(stem(ref)).mean()
    assert 0.45 < ratio < 0.5, ratio  # = sqrt(std), averaged over the channels


def test_converted_efficientnet_package_weights_predict_the_same(tmp_path):
    import efficientnet.tfkeras as efn

    size = 64
    pkg = efn.EfficientNetB0(weights=None, include_top=False, input_shape=(size, size, 3), pooling="avg")
    _randomize(pkg, seed=2)
    src = tmp_path / "efficientnet-b0_noisy-student_notop_package.h5"
    _write_legacy_h5(pkg, src)
    dst = models.convert_efficientnet_weights(src, tmp_path / "b0-ns.weights.h5", "b0")
    assert dst.is_file() and sorted(p.name for p in tmp_path.iterdir()) == [
        "b0-ns.weights.h5", src.name]

    x = _images(2, size, seed=7)
    ref = _predict(pkg, efn.preprocess_input(x.copy()))  # the package normalises outside its model
    model = models.build_model("efficientnet_b0", n_classes=2, size=size, weights=dst, dropout=0.0)
    got = _predict(model.get_layer("backbone"), x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert np.abs(ref).max() > 1e-2  # features are not all zero

    # the same conversion from the command line
    from kit.cli.app import main

    assert main(["convert-weights", str(src), "--model", "efficientnet_b0", "--out", str(tmp_path / "cli.weights.h5")]) == 0
    from_cli = models.build_model("efficientnet_b0", n_classes=2, size=size, weights=tmp_path / "cli.weights.h5")
    np.testing.assert_array_equal(_predict(from_cli.get_layer("backbone"), x), got)
    assert main(["convert-weights", str(tmp_path / "none.h5"), "--model", "b0", "--out", str(tmp_path / "x.weights.h5")]) == 1

    with pytest.raises(KitError, match=r"package.h5: weights do not fit efficientnet_b0 at 64px .*"
                                       "must first go through kit.training.models.convert_efficientnet_weights"):
        models.build_model("efficientnet_b0", n_classes=2, size=64, weights=src)
    with pytest.raises(KitError, match=r"block1b_dwconv.* of efficientnet_b1; is it another variant\?"):
        models.convert_efficientnet_weights(src, tmp_path / "b1.weights.h5", "efficientnet_b1")
    with pytest.raises(KitError, match="must end in .weights.h5"):
        models.convert_efficientnet_weights(src, tmp_path / "b0.h5", "b0")


_JAX_SCRIPT = textwrap.dedent("""
    import json
    import sys
    import numpy as np
    import keras
    from kit.training import models
    from kit.training.schedule import RampExpDecay
    out = {"backend": keras.backend.backend()}
    rng = np.random.default_rng(0)
    for name, k, n_meta in (("tiny_cnn", 2, 3), ("small_cnn", 7, 0)):
        m = models.build_model(name, n_classes=k, size=32, n_meta=n_meta)
        sched = RampExpDecay(lr_start=1e-3, lr_max=1e-2, lr_min=1e-4, ramp_epochs=1, sustain_epochs=0,
                             decay=0.8, steps_per_epoch=2)
        loss = "binary_crossentropy" if k == 2 else "sparse_categorical_crossentropy"
        m.compile(optimizer=keras.optimizers.Adam(sched), loss=loss)
        x = {"image": rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")}
        if n_meta:
            x["meta"] = rng.normal(size=(8, n_meta)).astype("float32")
        y = rng.integers(0, k, size=(8, 1)).astype("float32")
        before = keras.ops.convert_to_numpy(m.get_layer("head").kernel).copy()
        loss_value = float(m.train_on_batch(x, y))
        after = keras.ops.convert_to_numpy(m.get_layer("head").kernel)
        out[name] = {"loss": loss_value, "changed": bool(np.abs(after - before).max() > 0),
                     "shape": list(m.output_shape)}
    if len(sys.argv) > 1:  # keras-hub: a best.keras saved on TensorFlow, and a DINOv2 preset built here
        saved, images, preset = sys.argv[1:4]
        x = {"image": np.load(images)}
        out["saved_keras_hub"] = np.asarray(keras.saving.load_model(saved).predict(x, verbose=0)).tolist()
        m = models.build_model("hub_dinov2", n_classes=3, size=32, weights=preset)
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        out["hub_dinov2"] = {"loss": float(m.train_on_batch(x, np.array([0, 2]))), "shape": list(m.output_shape)}
    print("RESULT " + json.dumps(out))
""")


def test_cnns_and_keras_hub_presets_run_on_jax(tmp_path):
    args, expected = [], None
    if importlib.util.find_spec("keras_hub"):
        from test_weights import make_presets

        presets = make_presets(tmp_path)
        hub = models.build_model("hub_efficientnet", n_classes=3, size=32, weights=presets["efficientnet"])
        x = _images(2, 32, seed=4)
        hub.save(tmp_path / "best.keras")
        np.save(tmp_path / "x.npy", x)
        args, expected = [str(tmp_path / "best.keras"), str(tmp_path / "x.npy"), str(presets["dinov2"])], \
            _predict(hub, {"image": x})
    # Cheaper XLA CPU compiles (half the test's time goes to compiling); the computation is the same.
    env = dict(os.environ, KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="",
               XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    proc = subprocess.run([sys.executable, "-c", _JAX_SCRIPT, *args], env=env, capture_output=True, text=True,
                          timeout=180, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    assert r["backend"] == "jax"
    assert r["tiny_cnn"]["shape"] == [None, 1] and r["small_cnn"]["shape"] == [None, 7]
    for name in ("tiny_cnn", "small_cnn"):
        assert np.isfinite(r[name]["loss"]) and r[name]["changed"], r
    if args:  # a saved .keras needs only `import kit.training.models`, on either backend
        np.testing.assert_allclose(r["saved_keras_hub"], expected, rtol=1e-4, atol=1e-5)
        assert r["hub_dinov2"]["shape"] == [None, 3] and np.isfinite(r["hub_dinov2"]["loss"])


def test_too_small_input_fails_at_build_naming_the_model():
    # pcam_cnn's valid 3x3 convolutions and pools need at least 50 px; 48 px used to fail inside fit().
    with pytest.raises(KitError, match=r"pcam_cnn cannot be built at size 48 \(layer pcam_pool3 leaves an empty"):
        models.build_model("pcam_cnn", n_classes=2, size=48)
    assert models.build_model("pcam_cnn", n_classes=2, size=50).output_shape == (None, 1)

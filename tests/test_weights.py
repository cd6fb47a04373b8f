"""kit.training.models weights routes: a file, imagenet (offline: one line), keras-hub presets; export for the next run."""

import sys

import keras
import numpy as np
import pytest

from kit.training import models
from kit.core.errors import KitError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, 3)).astype("float32")


def _predict(model, inputs):
    return keras.ops.convert_to_numpy(model(inputs, training=False))


@pytest.mark.parametrize("weights, route", [
    ("", "none"), (None, "none"), ("imagenet", "imagenet"),
    ("weights/b0.weights.h5", "file"), ("efficientnetb0_notop.h5", "file"), ("runs/x/backbone", "file"),
    ("efficientnet_b0_ra_imagenet", "preset"), ("dinov2_small", "preset"),
    ("kaggle://keras/efficientnet/keras/efficientnet_b0_ra_imagenet/2", "preset"), ("hf://user/vit", "preset"),
])
def test_weights_route_decides_what_weights_means(weights, route):
    assert models.weights_route(weights) == route


def test_an_existing_folder_is_a_preset_and_a_file_without_suffix_a_file(tmp_path):
    (tmp_path / "preset").mkdir()
    (tmp_path / "plainfile").write_bytes(b"x")
    assert models.weights_route(tmp_path / "preset") == "preset"
    assert models.weights_route(str(tmp_path / "plainfile")) == "file"
    # an attached dataset's folder given where its .h5 file was meant
    (tmp_path / "preset" / "efficientnetb0_notop.h5").write_bytes(b"x")
    with pytest.raises(KitError, match=r"model efficientnet_b0 takes a weights file \(.h5 / .weights.h5\); "
                                       r"did you mean .*preset/efficientnetb0_notop.h5\?"):
        models.check_weights("efficientnet_b0", tmp_path / "preset")


# --- imagenet -----------------------------------------------------------------------------------------

def _offline(monkeypatch):
    """Make Keras' download fail the way it does without network; returns the file names Keras asked for."""
    from keras.src.utils import file_utils

    asked = []

    def get_file(fname=None, origin=None, **kwargs):
        asked.append(fname)
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", get_file)
    return asked


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_v2_b0", "resnet50", "vgg16", "convnext_tiny"])
def test_imagenet_offline_is_one_line_naming_the_file_keras_wanted(monkeypatch, name):
    asked = _offline(monkeypatch)
    with pytest.raises(KitError) as err:
        models.build_model(name, n_classes=2, size=32, weights="imagenet")
    message = str(err.value)
    assert asked == [models.imagenet_file(name)]  # kit's table names the very file Keras fetches
    assert "\n" not in message and message.startswith(f"imagenet: {name} needs Keras' {asked[0]}")
    assert f"--weights /kaggle/input/<dataset>/{asked[0]}" in message and "Temporary failure" in message


def test_imagenet_online_loads_what_keras_downloads(monkeypatch, tmp_path):
    src = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    path = tmp_path / "vgg16_notop.weights.h5"
    src.save_weights(str(path))
    from keras.src.utils import file_utils

    # what Keras' own download (or its cache in ~/.keras/models) hands back
    monkeypatch.setattr(file_utils, "get_file", lambda fname=None, origin=None, **kw: str(path))
    backbone = models.build_model("vgg16", n_classes=2, size=32, weights="imagenet").get_layer("backbone")
    assert len(backbone.weights) == len(src.weights) == 26
    for got, want in zip(backbone.weights, src.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want))


def test_an_imagenet_run_exports_a_file_that_rebuilds_the_same_backbone(monkeypatch, tmp_path):
    # pretrain from imagenet, export, fine-tune from the file: V1 EfficientNet normalises differently on
    # the two routes (an extra Rescaling layer on one), and the exported file must still compute the same
    import h5py
    from keras.src.legacy.saving import legacy_h5_format
    from keras.src.utils import file_utils

    src = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    norm = next(layer for layer in src.layers if isinstance(layer, keras.layers.Normalization))
    norm.set_weights([np.array(MEAN, "float32"), np.array(STD, "float32"), np.array(0, "int64")])  # as published
    with h5py.File(tmp_path / "efficientnetb0_notop.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, src)
    monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: str(tmp_path / "efficientnetb0_notop.h5"))
    run = models.build_model("efficientnet_b0", n_classes=2, size=32, weights="imagenet")
    run.save(tmp_path / "best.keras")
    out = models.export_backbone(tmp_path / "best.keras", tmp_path / "next.weights.h5")
    again = models.build_model("efficientnet_b0", n_classes=2, size=32, weights=out)
    x = _images(2, 32)
    want = _predict(run.get_layer("backbone"), x)
    np.testing.assert_allclose(_predict(again.get_layer("backbone"), x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("name, weights, message", [
    ("tiny_cnn", "imagenet", "imagenet: tiny_cnn has no ImageNet weights"),
    ("keras_hub", "", "model keras_hub takes its architecture from a keras-hub preset"),
    ("keras_hub", "imagenet", "model keras_hub takes its architecture from a keras-hub preset.* not imagenet"),
    ("tiny_cnn", "efficientnet_b0_ra_imagenet", "a keras-hub preset needs --model keras_hub"),
    ("tiny_cnn", "/nonexistent/w.weights.h5", "/nonexistent/w.weights.h5: weights file not found"),
])
def test_weights_that_cannot_work_are_one_line_before_anything_is_built(name, weights, message):
    with pytest.raises(KitError, match=message) as err:
        models.check_weights(name, weights)
    assert "\n" not in str(err.value)


# --- keras-hub presets ----------------------------------------------------------------------------------

def tiny_efficientnet():
    """A keras-hub EfficientNetBackbone of ~50k parameters (three V1 blocks), for CPU tests."""
    keras_hub = pytest.importorskip("keras_hub")
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0] * 3, stackwise_depth_coefficients=[1.0] * 3,
        stackwise_kernel_sizes=[3, 3, 3], stackwise_num_repeats=[1, 1, 1],
        stackwise_input_filters=[8, 8, 16], stackwise_output_filters=[8, 16, 32],
        stackwise_expansion_ratios=[1, 2, 2], stackwise_squeeze_and_excite_ratios=[0.25] * 3,
        stackwise_strides=[1, 2, 2], stackwise_block_types=["v1"] * 3,
        stackwise_force_input_filters=[0] * 3, stackwise_nores_option=[False] * 3, input_shape=(None, None, 3))


def save_preset(backbone, folder, scale, offset):
    """keras-hub's own save_to_preset, plus the image converter kit reads (mean, std, scaling)."""
    backbone.save_to_preset(str(folder))
    models.write_image_converter(folder, scale, offset)
    return folder


def make_presets(root):
    """Tiny EfficientNet, ViT and DINOv2 presets (random weights) under ``root``, each with its converter."""
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    imagenet_scale = [1 / (255 * s) for s in STD]
    imagenet_offset = [-m / s for m, s in zip(MEAN, STD)]
    vit = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2,
                                       hidden_dim=32, mlp_dim=64)
    dino = keras_hub.models.DINOV2Backbone(patch_size=4, num_layers=2, hidden_dim=32, num_heads=2,
                                           intermediate_dim=64, image_shape=(32, 32, 3),
                                           position_embedding_shape=(32, 32, 3))
    return {"efficientnet": save_preset(tiny_efficientnet(), root / "eff", imagenet_scale, imagenet_offset),
            "vit": save_preset(vit, root / "vit", 1 / 127.5, -1.0),
            "dinov2": save_preset(dino, root / "dinov2", imagenet_scale, imagenet_offset)}


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    return make_presets(tmp_path_factory.mktemp("presets"))


def test_preset_backbone_keeps_the_converter_inside_and_round_trips(presets, tmp_path):
    model = models.build_model("hub_efficientnet", n_classes=3, size=32, weights=presets["efficientnet"], n_meta=2)
    backbone = model.get_layer("backbone")
    names = [layer.name for layer in backbone.layers]  # (Keras numbers a second EfficientNetBackbone "_1")
    assert names[:2] == ["backbone_input", "image_converter"] and names[-1] == "backbone_pool"
    assert type(backbone.layers[2]).__name__ == "EfficientNetBackbone" and names[3] == "backbone_features"
    converter = backbone.get_layer("image_converter")
    np.testing.assert_allclose(converter.scale, [1 / (255 * s) for s in STD])
    np.testing.assert_allclose(converter.offset, [-m / s for m, s in zip(MEAN, STD)])
    bn = [la for la in backbone._flatten_layers() if isinstance(la, keras.layers.BatchNormalization)]
    assert bn and not any(la.trainable for la in bn)  # pretrained: BatchNorm statistics stay
    x = {"image": _images(4, 32), "meta": np.ones((4, 2), "float32")}
    before = _predict(model, x)
    assert before.shape == (4, 3) and len(np.unique(before.round(5))) > 3
    model.save(tmp_path / "best.keras")
    back = keras.saving.load_model(tmp_path / "best.keras")  # needs `import kit.training.models` only
    np.testing.assert_allclose(_predict(back, x), before, rtol=1e-5, atol=1e-6)


def test_grad_cam_reaches_the_feature_map_of_a_keras_hub_cnn(presets):
    from kit.ensemble import report

    model = models.build_model("hub_efficientnet", n_classes=3, size=32, weights=presets["efficientnet"])
    heat, out = report.gradcam(model, _images(2, 32))
    assert heat.shape == (2, 32, 32) and np.isfinite(heat).all() and out.shape == (2, 3)


@pytest.mark.parametrize("name, family", [("hub_vit", "vit"), ("hub_dinov2", "dinov2"), ("keras_hub", "vit")])
def test_vision_transformer_presets_pool_the_class_token(presets, name, family):
    model = models.build_model(name, n_classes=2, size=32, weights=presets[family])
    backbone = model.get_layer("backbone")
    assert backbone.layers[-1].name == "backbone_token" and backbone.output_shape == (None, 32)
    p = _predict(model, {"image": _images(3, 32)})
    assert p.shape == (3, 1) and np.all(np.isfinite(p))


def test_presets_that_do_not_fit_are_one_line(presets, tmp_path, monkeypatch):
    import shutil

    bare = shutil.copytree(presets["vit"], tmp_path / "bare")
    (bare / "image_converter.json").unlink()  # what Backbone.save_to_preset alone writes
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ("keras_hub", bare, 32, "bare: the keras-hub preset has no image_converter.json; kit needs the preset's "
                                "image converter"),
        ("hub_efficientnet", presets["vit"], 32,
         "vit: the preset holds a ViTBackbone, but model hub_efficientnet expects EfficientNetBackbone; "
         "pass --model keras_hub"),
        ("tiny_cnn", presets["vit"], 32, "a keras-hub preset needs --model keras_hub"),
        ("keras_hub", presets["vit"], 64, "vit: the preset's ViTBackbone does not load at 64px .*it was saved at "
                                          "32 px"),
        ("keras_hub", empty, 32, "empty: not a keras-hub preset folder \\(a keras-hub preset folder holds config.json\\)"),
        ("keras_hub", presets["vit"].parent, 32, "not a keras-hub preset folder; did you mean .*/dinov2\\?"),
    ]
    for name, weights, size, message in cases:
        with pytest.raises(KitError, match=message) as err:
            models.build_model(name, n_classes=2, size=size, weights=weights)
        assert "\n" not in str(err.value)
    from keras_hub.src.utils import preset_utils

    def offline(preset, path):
        raise ConnectionError(f"Failed to resolve 'www.kaggle.com' fetching {preset}/{path}")

    monkeypatch.setattr(preset_utils, "get_file", offline)
    with pytest.raises(KitError, match="efficientnet_b0_ra_imagenet: cannot fetch the keras-hub preset's config.json "
                                       ".*attach the preset as a Kaggle Model"):
        models.build_model("keras_hub", n_classes=2, size=32, weights="efficientnet_b0_ra_imagenet")
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # as on a machine without keras-hub
    with pytest.raises(KitError, match="needs keras-hub, which is not installed here: pip install --no-deps"):
        models.check_weights("keras_hub", presets["vit"])


# --- a run's backbone as weights for the next run -----------------------------------------------------------

def test_export_backbone_file_and_preset_carry_the_weights(presets, tmp_path):
    from kit.cli.app import main

    x = _images(3, 32, seed=2)
    tiny = models.build_model("tiny_cnn", n_classes=7, size=32)
    tiny.save(tmp_path / "tiny.keras")
    assert main(["export-backbone", str(tmp_path / "tiny.keras"), "--out", str(tmp_path / "t.weights.h5")]) == 0
    again = models.build_model("tiny_cnn", n_classes=2, size=32, weights=tmp_path / "t.weights.h5")
    np.testing.assert_allclose(_predict(again.get_layer("backbone"), x), _predict(tiny.get_layer("backbone"), x),
                               rtol=1e-6)
    with pytest.raises(KitError, match="t.weights.h5: already exists"):
        models.export_backbone(tmp_path / "tiny.keras", tmp_path / "t.weights.h5")
    with pytest.raises(KitError, match="must end in .weights.h5"):
        models.export_backbone(tmp_path / "tiny.keras", tmp_path / "t.h5")

    hub = models.build_model("hub_efficientnet", n_classes=2, size=32, weights=presets["efficientnet"])
    hub.save(tmp_path / "hub.keras")
    out = models.export_backbone(tmp_path / "hub.keras", tmp_path / "next_preset")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "image_converter.json", "metadata.json", "model.weights.h5"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no partial folder left
    reloaded = models.build_model("keras_hub", n_classes=2, size=32, weights=out)
    np.testing.assert_allclose(_predict(reloaded.get_layer("backbone"), x), _predict(hub.get_layer("backbone"), x),
                               rtol=1e-5, atol=1e-6)

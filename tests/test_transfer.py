"""The weights are really used: a backbone pretrained on digits 0-4 and handed to ``kit train --weights``
(as a weights file, and as a keras-hub preset) beats the same backbone from scratch on digits 5-9.

No ImageNet weights can be downloaded here, so kit makes its own: scikit-learn's 8x8 digits, upscaled to
32 px RGB. Pretraining sees every image of digits 0-4; the second task has 30 images per digit of 5-9,
written as class folders and turned into records by kit's own writer, then trained by ``kit train`` with
two folds. With seeds 0, 1 and 2 the pretrained runs beat scratch by 0.19 to 0.26 (weights file, tiny_cnn) and
0.26 to 0.38 (preset, a tiny keras-hub EfficientNet) in out-of-fold balanced accuracy; the tests ask for 0.15.
"""

import json

import keras
import numpy as np
import pytest

from kit.training import models
from kit.data import records
from kit.cli.app import main
from kit.training.config import Config

pytestmark = pytest.mark.slow
SIZE = 32
# the same short schedule for scratch and fine-tuning: the comparison is about the starting weights only
TRAIN = dict(epochs=7, batch=8, lr_start=3e-3, lr_max=3e-3, lr_min=1e-4, lr_ramp_epochs=0, lr_decay=0.85,
             augment="none", verbose=0, strategy="cpu", seed=0)


def _digits(digits, per_class=None, seed=0):
    """(uint8 [N, 32, 32, 3] images, labels) of the given digits; ``per_class`` draws that many of each."""
    from sklearn.datasets import load_digits

    data, rng = load_digits(), np.random.default_rng(seed)
    index = []
    for d in digits:
        idx = np.flatnonzero(data.target == d)
        index += list(rng.choice(idx, per_class, replace=False) if per_class else idx)
    images = np.kron(data.images[index] * (255 / 16), np.ones((1, SIZE // 8, SIZE // 8)))
    return np.repeat(images[..., None], 3, axis=-1).round().astype(np.uint8), data.target[index]


@pytest.fixture(scope="module")
def second_task(tmp_path_factory):
    """Records of digits 5-9, 30 images each, from class folders (the layout of a Kaggle download)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("digits")
    images, labels = _digits(range(5, 10), per_class=30, seed=TRAIN["seed"])
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / "download" / "train" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{label}_{i:03d}.png")
    records.write_from_source(root / "download", root / "records", layout="folders", size=SIZE, n_folds=2,
                              workers=1, progress=False)
    return root / "records"


def _pretrain(name, weights, out, epochs, lr):
    """Train kit's model on digits 0-4 and save it as a run would (best.keras)."""
    keras.utils.set_random_seed(TRAIN["seed"])
    x, y = _digits(range(5))
    model = models.build_model(name, n_classes=5, size=SIZE, weights=weights)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    model.fit({"image": x}, y, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    model.save(out)
    return out


def _cv(tmp_path, records_dir, name, model, weights=""):
    """``kit train --config ... --model M [--weights W]``; the run's overall out-of-fold balanced accuracy."""
    config = tmp_path / f"{name}.toml"
    Config(**TRAIN).save(config)
    argv = ["train", "--config", str(config), "--records", str(records_dir), "--out", str(tmp_path / name),
            "--model", model] + (["--weights", str(weights)] if weights else [])
    assert main(argv) == 0
    return json.loads((tmp_path / name / "cv.json").read_text())["overall"]


def test_pretrained_weights_file_beats_scratch(second_task, tmp_path, capsys):
    best = _pretrain("tiny_cnn", None, tmp_path / "digits04.keras", epochs=20, lr=3e-3)
    assert main(["export-backbone", str(best), "--out", str(tmp_path / "digits04.weights.h5")]) == 0
    scratch = _cv(tmp_path, second_task, "scratch", "tiny_cnn")
    tuned = _cv(tmp_path, second_task, "tuned", "tiny_cnn", tmp_path / "digits04.weights.h5")
    with capsys.disabled():
        print(f"\ntiny_cnn on digits 5-9: balanced accuracy from scratch {scratch:.3f}, from the file {tuned:.3f}")
    assert tuned > scratch + 0.15, (scratch, tuned)


def test_pretrained_keras_hub_preset_beats_scratch(second_task, tmp_path, capsys):
    pytest.importorskip("keras_hub")
    from test_weights import save_preset, tiny_efficientnet

    # "scratch" is the same architecture from a preset of random weights, which is how kit trains a
    # keras-hub architecture from scratch (BatchNorm statistics stay at their initial values there too).
    keras.utils.set_random_seed(TRAIN["seed"])
    random = save_preset(tiny_efficientnet(), tmp_path / "random_preset", 1 / 255, 0.0)
    best = _pretrain("hub_efficientnet", random, tmp_path / "digits04.keras", epochs=6, lr=3e-3)
    assert main(["export-backbone", str(best), "--out", str(tmp_path / "digits04_preset")]) == 0
    scratch = _cv(tmp_path, second_task, "scratch", "hub_efficientnet", random)
    tuned = _cv(tmp_path, second_task, "tuned", "hub_efficientnet", tmp_path / "digits04_preset")
    with capsys.disabled():
        print(f"\nkeras-hub EfficientNet on digits 5-9: balanced accuracy from scratch {scratch:.3f}, "
              f"from the preset {tuned:.3f}")
    assert tuned > scratch + 0.15, (scratch, tuned)

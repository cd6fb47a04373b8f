"""`kit report`: every section, every embedded image decodes, the page's numbers are cv.json's and oof.csv's,
the worst mistakes are the largest errors, the bootstrap narrows with size, Grad-CAM finds the one corner a
model sees, and kit train's error.txt."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit import records, report, train
from kit.cli import main
from kit.config import Config
from records_fixture import write_records

BINARY_SECTIONS = ["config", "records", "cv", "curves", "lr", "binary", "mistakes", "patients", "gradcam", "shakeup"]


class Page(HTMLParser):
    """Sections, images and tables (cells' exact data-value, or text) of a report page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[tuple[str, str]] = []  # (section, src)
        self.tables: dict[str, list[list]] = {}  # table class -> rows of cells
        self._table = self._row = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"])
        elif tag == "img":
            self.images.append((self.sections[-1] if self.sections else "", a["src"]))
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("class") or "", [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"value": a.get("data-value"), "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            v = self._cell["value"]
            self._row.append(float(v) if v is not None else self._cell["text"])
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def _train(root: Path, n_classes: int, epochs: int) -> Path:
    write_records(root / "records", n_folds=2, per_fold=24, size=32, n_classes=n_classes, seed=3)
    cfg = Config(records=str(root / "records"), out=str(root / "run"), model="tiny_cnn", epochs=epochs, batch=8,
                 lr_start=3e-3, lr_max=3e-3, verbose=0)
    return train.train_folds(cfg, log=lambda _: None).run


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    """A 2-fold, 2-epoch tiny_cnn run at 32 px and its report (via the CLI, 60 bootstrap draws)."""
    run = _train(tmp_path_factory.mktemp("binary"), 2, 2)
    cv_before = json.loads((run / "cv.json").read_text())
    assert main(["report", str(run), "--draws", "60", "--mistakes", "6"]) == 0
    return run, cv_before, Page((run / "report.html").read_text())


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory):
    run = _train(tmp_path_factory.mktemp("multi"), 3, 1)
    result = report.write_report(run, run / "page.html", draws=20, mistakes=5)
    return run, result, Page(result.path.read_text())


def test_every_section_present_and_every_image_decodes(binary_run, multiclass_run):
    _, _, page = binary_run
    assert page.sections == BINARY_SECTIONS
    _, result, multi = multiclass_run
    assert multi.sections == [s if s != "binary" else "multiclass" for s in BINARY_SECTIONS] == result.sections
    for p in (page, multi):
        assert {s for s, _ in p.images} >= {"cv", "curves", "lr", "mistakes", "gradcam", "shakeup"}
        for _, src in p.images:
            assert src.startswith("data:image/png;base64,")  # embedded: nothing loads from anywhere
            im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
            im.load()
            assert im.width > 0 and im.height > 0
    assert not re.search(r'(src|href)="(https?:)?//', (binary_run[0] / "report.html").read_text())


def test_numbers_in_the_page_are_cv_json_and_oof_csv(binary_run):
    run, cv_before, page = binary_run
    cv = json.loads((run / "cv.json").read_text())
    # adding only: every key train wrote is unchanged, the shake-up is new
    assert {k: v for k, v in cv.items() if k != "shakeup"} == cv_before and "shakeup" in cv
    rows = {r[0]: r[1] for r in page.tables["cv"][1:]}
    assert rows == {**{f"fold {k}": v for k, v in cv["folds"].items()}, "mean of folds": cv["fold_mean"],
                    "std over folds": cv["fold_std"], "pooled out of fold": cv["overall"]}
    shake = {r[0]: r[1:] for r in page.tables["shakeup"][1:]}
    for key, label in (("public", "public leaderboard"), ("private", "private leaderboard"),
                       ("difference", "private - public")):
        s = cv["shakeup"][key]
        assert shake[label] == [s["mean"], s["std"], s["p05"], s["p95"]]
    assert (cv["shakeup"]["public_size"], cv["shakeup"]["private_size"], cv["shakeup"]["draws"]) == (3295, 7687, 60)


def test_worst_mistakes_are_the_largest_errors(binary_run):
    run, _, page = binary_run
    oof = pd.read_csv(run / "oof.csv", dtype={"image_name": str})
    oof["error"] = (oof["target"] - oof["pred"]).abs()
    expected = oof.sort_values(["error", "image_name"], ascending=[False, True]).head(6)
    rows = page.tables["mistakes"][1:]
    assert [r[0] for r in rows] == expected["image_name"].tolist()
    assert [r[1:] for r in rows] == [[float(t), p, e, float(f)] for t, p, e, f in
                                     expected[["target", "pred", "error", "fold"]].itertuples(index=False)]
    # a thumbnail for each, read from the records
    text = (run / "report.html").read_text()
    mistakes = text[text.index('id="mistakes"'):text.index('id="patients"')]
    assert mistakes.count("data:image/png") == 6
    # the records' groups: two images per group in the fixture
    assert page.tables["patients"][1][1] == 2.0


def test_bootstrap_spread_shrinks_as_the_draw_grows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    p = np.clip(0.5 * y + rng.normal(0.25, 0.25, 2000), 0, 1)
    small, _ = report.shakeup(y, p, "auc", 200, 200, draws=100)
    big, samples = report.shakeup(y, p, "auc", 5000, 5000, draws=100)
    assert big["difference"]["std"] < small["difference"]["std"] / 3  # 25x the rows: about 5x narrower
    assert big["private"]["std"] < small["private"]["std"] / 3
    assert abs(big["difference"]["mean"]) < 3 * big["difference"]["std"]
    assert len(samples["difference"]) == 100 and big["skipped_draws"] == 0
    only_private, _ = report.shakeup(y, p, "auc", 0, 1000, draws=10)
    assert "public" not in only_private and "difference" not in only_private


def test_leaderboard_sizes_given_known_or_default():
    # the sizes come from the competition registry, by the records' manifest
    def manifest(**kw):
        return records.Manifest(image_size=32, shards=(), **kw)

    assert report.leaderboard_sizes(manifest(layout="pcam"), 100, 200) == (100, 200, "given (--public/--private)")
    assert report.leaderboard_sizes(manifest(competition="siim"))[:2] == (3295, 7687) and 3295 + 7687 == 10982
    assert report.leaderboard_sizes(manifest(layout="pcam"))[:2] == (28729, 28729)
    assert report.leaderboard_sizes(manifest(competition="ham10000"))[:2] == (0, 1512)
    pub, priv, source = report.leaderboard_sizes(manifest(layout="folders", classes=("cat", "dog")))
    assert (pub, priv) == (3295, 7687) and "default" in source
    assert report.leaderboard_sizes(None)[:2] == (3295, 7687)
    with pytest.raises(report.KitError, match="give both"):
        report.leaderboard_sizes(manifest(competition="siim"), 100, None)


@keras.saving.register_keras_serializable(package="kit_test")
class KeepCorner(keras.layers.Layer):
    """Zeroes every pixel outside the top-right quarter: the model only sees that corner."""

    def call(self, x):
        size = x.shape[1]
        mask = np.zeros((1, size, size, 1), "float32")
        mask[:, : size // 2, size // 2:] = 1.0
        return x * mask


def _corner_model(size: int = 32) -> keras.Model:
    """Built like kit's models: image -> [preprocess] -> nested backbone -> dropout -> sigmoid head."""
    small = keras.initializers.Constant(0.05)  # positive, and small enough that the sigmoid is not saturated
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, activation="relu", kernel_initializer=small)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, activation="relu",
                            kernel_initializer=small)(x)
    backbone = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x), name="corner_backbone")
    image = keras.Input((size, size, 3), name="image")
    f = backbone(KeepCorner(name="preprocess")(image))
    f = keras.layers.Dropout(0.2)(f)
    out = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=small)(f)
    return keras.Model({"image": image}, out)


def test_gradcam_of_a_model_that_sees_one_corner_peaks_there():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (3, 32, 32, 3)).astype("float32")  # signal everywhere; only a corner is seen
    heat, out = report.gradcam(_corner_model(), images, classes=[1, 1, 1])
    assert heat.shape == (3, 32, 32) and out.shape == (3, 1) and np.all((out > 0.5) & (out < 0.9))
    for h in heat:
        y, x = np.unravel_index(np.argmax(h), h.shape)
        assert y < 16 and x >= 16, (y, x)  # the top-right quarter, not transposed or flipped
        assert h[:16, 16:].mean() > 5 * max(h[16:, :].mean(), h[:, :12].mean(), 1e-6)
        assert 0.9 < h.max() <= 1.0  # normalised on the feature map, then resized bilinearly


def test_gradcam_runs_on_the_fold_models_kit_trains(binary_run):
    run, _, page = binary_run
    text = (run / "report.html").read_text()
    section = text[text.index('id="gradcam"'):text.index('id="shakeup"')]
    # every card shows the image and its heatmap
    assert section.count('class="card"') * 2 == section.count("data:image/png") > 0
    model = keras.saving.load_model(run / "fold0" / "best.keras", compile=False)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    heat, out = report.gradcam(model, images)
    direct = keras.ops.convert_to_numpy(model({"image": images}, training=False))
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-6)  # the replayed head is the model
    assert heat.shape == (2, 32, 32) and 0.0 <= heat.min() and heat.max() <= 1.0


def test_kit_train_writes_error_txt_when_a_fold_raises_and_removes_it_on_restart(tmp_path, monkeypatch):
    write_records(tmp_path / "records", n_folds=2, per_fold=8, size=32, seed=1)
    cfg = Config(records=str(tmp_path / "records"), out=str(tmp_path / "run"), model="tiny_cnn", epochs=1, verbose=0)

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(train, "train_fold", boom)
    with pytest.raises(RuntimeError):
        train.train_folds(cfg, log=lambda _: None)
    assert (tmp_path / "run" / "error.txt").read_text() == "fold 0: RuntimeError: out of memory\n"
    from kit import runs

    assert runs.read_run(tmp_path / "run", now=1e12).state == "error"
    monkeypatch.setattr(train, "train_fold", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train.train_folds(cfg, resume=True, log=lambda _: None)
    assert not (tmp_path / "run" / "error.txt").exists()  # interrupted, not failed: resumable
    assert runs.read_run(tmp_path / "run", now=1e12).state == "resumable"


def test_report_refuses_a_folder_without_cv_json(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == (f"kit report: error: {tmp_path / 'cv.json'}: missing; a report needs "
                                               "at least one finished fold (train the run first)")


def _one_per_family() -> list[str]:
    from kit import backbones

    first: dict[str, str] = {}
    for name, row in sorted(backbones.BACKBONES.items()):
        if row.family != "keras_hub":  # built from a preset only (tests/test_weights.py)
            first.setdefault(row.family, name)
    return sorted(first.values())


# Grad-CAM replays the layers after the backbone's last feature map; where that replay is not the model
# (ConvNeXt's head), kit report says so instead of drawing a heatmap of another function.
NO_GRADCAM = {"convnext"}


@pytest.mark.parametrize("name", _one_per_family())
def test_gradcam_works_for_every_backbone_family(name):
    """The registry drives it: a new family of backbones gets Grad-CAM checked as soon as it is registered."""
    from kit import models

    size = 96 if name == "pcam_cnn" else 64  # the PCam CNN's valid convolutions need 96 px
    model = models.build_model(name, n_classes=3, size=size)
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    if models._backbone(name).family in NO_GRADCAM:
        with pytest.raises(report.KitError, match="Grad-CAM cannot replay this backbone's head"):
            report.gradcam(model, images)
        return
    heat, out = report.gradcam(model, images)
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(model({"image": images}, training=False)),
                               rtol=1e-4, atol=1e-5)
    assert heat.shape == (2, size, size) and np.isfinite(heat).all() and heat.max() <= 1.0


def test_a_stack_folder_reports_its_feature_importance(tmp_path):
    """A `kit stack` folder (config.toml listing runs, fold{k}/done.json, features.csv, no fold models)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    (tmp_path / "config.toml").write_text('runs = ["runs/b0"]\nmodels = ["lightgbm", "xgboost"]\n')
    pd.DataFrame({"image_name": [f"id{i:03d}" for i in range(200)], "target": y,
                  "pred": np.clip(0.6 * y + rng.uniform(0, 0.4, 200), 0, 1), "fold": np.arange(200) % 2}
                 ).to_csv(tmp_path / "oof.csv", index=False)
    (tmp_path / "cv.json").write_text(json.dumps({
        "metric": "auc", "folds": {"0": 0.97, "1": 0.98}, "overall": 0.975, "fold_mean": 0.975, "fold_std": 0.007,
        "models": {"lightgbm": {"overall": 0.97, "weight": 0.75}, "xgboost": {"overall": 0.96, "weight": 0.25}}}))
    pd.DataFrame({"feature": ["age", "b0_pred", "site"], "source": ["metadata", "run", "metadata"],
                  "kind": ["numeric"] * 3, "importance_lightgbm": [0.3, 0.6, 0.1],
                  "importance_xgboost": [0.2, 0.7, 0.1]}).to_csv(tmp_path / "features.csv", index=False)
    result = report.write_report(tmp_path, draws=10, public=500, private=1000)
    page = Page(result.path.read_text())
    assert page.sections[-1] == "importance" and "shakeup" in page.sections
    rows = page.tables["importance"]
    assert rows[0] == ["feature", "importance", "importance_lightgbm", "importance_xgboost", "source"]
    assert [r[:2] for r in rows[1:]] == [["b0_pred", pytest.approx(0.65)], ["age", pytest.approx(0.25)],
                                         ["site", pytest.approx(0.1)]]
    assert page.tables["kinds"][1:] == [["lightgbm", 0.97, 0.75], ["xgboost", 0.96, 0.25]]
    assert (result.shakeup["public_size"], result.shakeup["private_size"]) == (500, 1000)

"""`kit report`: every section, every embedded image decodes, the page's numbers are cv.json's and oof.csv's,
the worst mistakes are the largest errors, the bootstrap narrows with size and takes its leaderboard sizes from
where they are known, Grad-CAM finds the one corner a model sees and runs on every model kit builds, the run's
own files are never touched, hostile inputs, and kit train's error.txt."""

from __future__ import annotations

import base64
import io
import json
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.data import records, sources
from kit.ensemble import report
from kit.training import train
from kit.cli.app import main
from kit.training.config import Config
from records_fixture import write_records

BINARY_SECTIONS = ["cv", "curves", "lr", "binary", "mistakes", "patients", "gradcam", "shakeup", "records", "config"]


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


def _files(run: Path) -> dict[str, bytes]:
    return {str(f.relative_to(run)): f.read_bytes() for f in sorted(run.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    """A 2-fold, 2-epoch tiny_cnn run at 32 px and its report (via the CLI, 60 bootstrap draws); the run's files
    before the report."""
    run = _train(tmp_path_factory.mktemp("binary"), 2, 2)
    before = _files(run)
    assert main(["report", str(run), "--draws", "60", "--mistakes", "6", "--public", "3295", "--private", "7687"]) == 0
    return run, before, Page((run / "report.html").read_text())


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory):
    """A 3-class run on records of no known competition whose download is gone: no leaderboard size at all."""
    run = _train(tmp_path_factory.mktemp("multi"), 3, 1)
    result = report.write_report(run, run / "page.html", draws=20, mistakes=5)
    return run, result, Page(result.path.read_text())


def test_every_section_present_and_every_image_decodes(binary_run, multiclass_run):
    _, _, page = binary_run
    assert page.sections == BINARY_SECTIONS
    _, result, multi = multiclass_run
    assert multi.sections == [s if s != "binary" else "multiclass" for s in BINARY_SECTIONS] == result.sections
    assert "shakeup" in {s for s, _ in page.images}
    for p in (page, multi):
        assert {s for s, _ in p.images} >= {"cv", "curves", "lr", "mistakes", "gradcam"}
        for _, src in p.images:
            assert src.startswith("data:image/png;base64,")  # embedded: nothing loads from anywhere
            im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
            im.load()
            assert im.width > 0 and im.height > 0
    assert not re.search(r'(src|href)="(https?:)?//', (binary_run[0] / "report.html").read_text())


def test_numbers_in_the_page_are_cv_json_and_oof_csv(binary_run):
    run, before, page = binary_run
    cv = json.loads((run / "cv.json").read_text())
    rows = {r[0]: r[1] for r in page.tables["cv"][1:]}
    assert rows == {**{f"fold {k}": v for k, v in cv["folds"].items()}, "mean of folds": cv["fold_mean"],
                    "std over folds": cv["fold_std"], "pooled out of fold": cv["overall"]}
    numbers = json.loads((run / "report.json").read_text())
    shake = {r[0]: r[1:] for r in page.tables["shakeup"][1:]}
    for key, label in (("public", "public leaderboard"), ("private", "private leaderboard"),
                       ("difference", "private - public")):
        s = numbers["shakeup"][key]
        assert shake[label] == [s["mean"], s["std"], s["p05"], s["p95"]]
    assert (numbers["shakeup"]["public_size"], numbers["shakeup"]["private_size"], numbers["shakeup"]["draws"]) == (
        3295, 7687, 60)
    assert numbers["shakeup"]["source"] == "given (--public/--private)" and numbers["page"] == str(run / "report.html")


def test_the_report_touches_no_file_of_the_run(binary_run):
    run, before, _ = binary_run
    after = _files(run)
    assert set(after) - set(before) == {"report.html", "report.json"}
    assert {k: after[k] for k in before} == before  # cv.json, oof.csv, config.toml, the models: byte for byte


def test_the_page_opens_with_the_scores_and_shows_class_counts_as_a_table(binary_run, multiclass_run):
    _, _, page = binary_run
    assert page.sections[:2] == ["cv", "curves"] and page.sections[-2:] == ["records", "config"]
    _, _, multi = multiclass_run
    manifest = records.read_manifest(multiclass_run[0].parent / "records")
    rows = multi.tables["folds"]
    assert rows[0] == ["fold", "images", "groups", "c0", "c1", "c2"]
    assert rows[1:] == [[float(k), float(f.images), float(f.groups), *[float(f.class_counts[c]) for c in
                                                                       ("c0", "c1", "c2")]]
                        for k, f in sorted(manifest.folds.items())]
    assert page.tables["folds"][0] == ["fold", "images", "groups", "positives"]


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


def _manifest(**kw):
    return records.Manifest(image_size=32, shards=(), **kw)


def test_leaderboard_sizes_given_or_from_the_competition():
    assert report.leaderboard_sizes(_manifest(layout="pcam"), 100, 200) == (100, 200, "given (--public/--private)")
    assert report.leaderboard_sizes(_manifest(competition="siim"))[:2] == (3295, 7687) and 3295 + 7687 == 10982
    assert report.leaderboard_sizes(_manifest(layout="pcam"))[:2] == (28729, 28729)
    assert report.leaderboard_sizes(_manifest(competition="ham10000"))[:2] == (0, 1512)
    with pytest.raises(report.KitError, match="give both"):
        report.leaderboard_sizes(_manifest(competition="siim"), 100, None)


def test_leaderboard_size_from_the_test_split_of_the_download(tmp_path):
    from kit.data import sources, synth

    root = synth.make_competition("melanoma10k", tmp_path / "mel", n_train=12, n_test=9, size=16)
    count = len(sources.load_source(root, test=True).table)
    assert count == 9
    # Benign/Malignant folders are the melanoma10k competition, whose registry row has no leaderboard sizes
    manifest = _manifest(layout="folders", classes=("Benign", "Malignant"), source=str(root))
    pub, priv, source = report.leaderboard_sizes(manifest)
    assert (pub, priv) == (0, 9) and source.startswith(f"the 9 images of the test split of {root}; one leaderboard")
    # the download gone, or without a test split: nothing says
    gone = _manifest(layout="folders", classes=("cat", "dog"), source=str(tmp_path / "gone"))
    assert report.leaderboard_sizes(gone) is None
    assert report.leaderboard_sizes(None) is None


def test_leaderboard_size_from_test_records(tmp_path):
    ids = [f"t{i}" for i in range(5)]
    table = pd.DataFrame({"image_name": ids, "target": -1, "fold": -1, "group": ids})
    src = sources.Source(table=table, classes=["benign", "malignant"], layout="csv", id_name="image_name",
                         labelled=False)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    records.write_encoded(src, [png.getvalue()] * 5, tmp_path / "test", size=8, n_folds=0, test=True, fmt="png")
    manifest = _manifest(layout="folders", classes=("cat", "dog"), source="")
    assert report.leaderboard_sizes(manifest, test_records=tmp_path / "test")[:2] == (0, 5)
    # the registry's sizes come first: the scored test set, not the part of it a download holds
    assert report.leaderboard_sizes(_manifest(competition="siim"), test_records=tmp_path / "test")[:2] == (3295, 7687)


def test_no_leaderboard_size_means_no_estimate_in_one_line(multiclass_run, capsys):
    run, result, page = multiclass_run
    assert result.shakeup is None and result.no_shakeup == report.NO_SIZES
    text = (run / "page.html").read_text()
    section = text[text.index('id="shakeup"'):text.index('id="records"')]
    assert section.count('class="note"') == 1 and "no shake-up estimate" in section and "<img" not in section
    assert json.loads((run / "report.json").read_text())["shakeup"] is None
    assert report.NO_SIZES in report.format_result(result).splitlines()
    assert report.NO_SIZES.startswith("no shake-up estimate: no leaderboard size is known")


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
    cfg = Config(records=str(tmp_path / "records"), out=str(tmp_path / "run"), model="tiny_cnn", epochs=1, batch=4,
                 verbose=0)

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(train, "train_fold", boom)
    with pytest.raises(RuntimeError):
        train.train_folds(cfg, log=lambda _: None)
    assert (tmp_path / "run" / "error.txt").read_text() == "fold 0: RuntimeError: out of memory\n"
    from kit.runs import listing as runs

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
    """The smallest backbone of each family (keras-hub ones are built from presets below)."""
    from kit.training import backbones

    first: dict[str, str] = {}
    for name, row in sorted(backbones.BACKBONES.items(), key=lambda kv: (kv[1].params or 0, kv[0])):
        if row.family != "keras_hub":
            first.setdefault(row.family, name)
    return sorted(first.values())


def _varied_heatmaps(heat: np.ndarray, n: int, size: int) -> None:
    assert heat.shape == (n, size, size) and np.isfinite(heat).all()
    assert 0.0 <= heat.min() and heat.max() <= 1.0
    for h in heat:
        assert h.max() - h.min() > 0.05  # a map, not one value everywhere


@pytest.mark.parametrize("name", _one_per_family())
def test_gradcam_works_for_every_backbone_family(name):
    """The registry drives it: a new family of backbones gets Grad-CAM checked as soon as it is registered."""
    from kit.training import models

    size = 96 if name == "pcam_cnn" else 64  # the PCam CNN's valid convolutions need 96 px
    model = models.build_model(name, n_classes=3, size=size)
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    heat, out = report.gradcam(model, images)
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(model({"image": images}, training=False)),
                               rtol=1e-4, atol=1e-5)
    assert heat.shape == (2, size, size) and np.isfinite(heat).all() and heat.max() <= 1.0


@pytest.fixture(scope="module")
def convnext():
    """convnext_tiny from random weights at 96 px (a 3x3 last stage), built once for the module."""
    from kit.training import models

    keras.utils.set_random_seed(0)
    return models.build_model("convnext_tiny", n_classes=2, size=96)


def test_gradcam_on_convnext_weighs_its_last_stage(convnext):
    images = np.random.default_rng(1).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    heat, out = report.gradcam(convnext, images)
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(convnext({"image": images}, training=False)),
                               rtol=1e-5, atol=1e-6)
    _varied_heatmaps(heat, 2, 96)
    # the map weighed is the input of the backbone's pooling: the last stage's output, after its residual add
    pool = [op for op in convnext.get_layer("backbone").operations if report._reduces_a_map(op)][-1]
    assert type(pool).__name__ == "GlobalAveragePooling2D" and tuple(pool.input.shape[1:]) == (3, 3, 768)


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    from test_weights import make_presets

    return make_presets(tmp_path_factory.mktemp("presets"))


@pytest.mark.parametrize("family", ["vit", "dinov2"])
def test_gradcam_on_keras_hub_vision_transformers_lays_patch_tokens_on_their_grid(presets, family):
    from kit.training import models

    preset = presets[family]  # ViT: 8 px patches (a 4x4 grid); DINOv2: 4 px patches (8x8)
    model = models.build_model(f"hub_{family}", n_classes=3, size=32, weights=preset)
    images = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    heat, out = report.gradcam(model, images)
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(model({"image": images}, training=False)),
                               rtol=1e-5, atol=1e-6)
    _varied_heatmaps(heat, 3, 32)


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
    assert page.sections[-3:] == ["importance", "records", "config"] and "shakeup" in page.sections
    rows = page.tables["importance"]
    assert rows[0] == ["feature", "importance", "importance_lightgbm", "importance_xgboost", "source"]
    assert [r[:2] for r in rows[1:]] == [["b0_pred", pytest.approx(0.65)], ["age", pytest.approx(0.25)],
                                         ["site", pytest.approx(0.1)]]
    assert page.tables["kinds"][1:] == [["lightgbm", 0.97, 0.75], ["xgboost", 0.96, 0.25]]
    assert (result.shakeup["public_size"], result.shakeup["private_size"]) == (500, 1000)


# --- a run that reads metadata beside its images ------------------------------------------------------------


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory):
    """A 2-fold, 1-epoch tiny_cnn run with --meta (age and sex beside each image), and its report."""
    root = tmp_path_factory.mktemp("meta")
    write_records(root / "records", n_folds=2, per_fold=16, size=32, seed=4, meta=True)
    cfg = Config(records=str(root / "records"), out=str(root / "run"), model="tiny_cnn", epochs=1, batch=8,
                 meta=True, verbose=0)
    run = train.train_folds(cfg, log=lambda _: None).run
    result = report.write_report(run, draws=10, mistakes=4, gradcam_per_kind=3, public=100, private=200)
    return run, result


def test_gradcam_on_a_metadata_run_feeds_each_image_its_metadata(meta_run):
    run, result = meta_run
    assert "gradcam" in result.sections and not [n for n in result.notes if "Grad-CAM" in n]
    text = result.path.read_text()
    section = text[text.index('id="gradcam"'):text.index('id="shakeup"')]
    assert section.count('class="card"') > 0 and section.count('class="card"') * 2 == section.count("data:image/png")
    assert "each image was given its own, as in training" in section
    # the metadata the report feeds: what training fed, standardised and one-hot (age, then sex's two codes)
    config = tomllib.loads((run / "config.toml").read_text())
    oof = pd.read_csv(run / "oof.csv", dtype={"image_name": str})
    fold0 = oof[oof["fold"] == 0]["image_name"].tolist()[:4]
    read = report.read_records(Path(config["records"]), [0], set(fold0), config)
    meta = np.stack([read.meta[i] for i in fold0])
    assert meta.shape == (4, 3) and set(np.unique(meta[:, 1:])) <= {0.0, 1.0} and (meta[:, 1:].sum(1) == 1).all()
    model = keras.saving.load_model(run / "fold0" / "best.keras", compile=False)
    images = np.stack([read.images[i] for i in fold0]).astype("float32")
    heat, out = report.gradcam(model, images, meta=meta)
    direct = keras.ops.convert_to_numpy(model({"image": images, "meta": meta}, training=False))
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, 0], oof.set_index("image_name").loc[fold0, "pred"], atol=1e-4)  # as trained
    _varied_heatmaps(heat, 4, 32)
    # without metadata at hand, every column is missing (the column mean for a number, no code for a category)
    heat0, out0 = report.gradcam(model, images)
    zeros = keras.ops.convert_to_numpy(model({"image": images, "meta": np.zeros((4, 3), "float32")}, training=False))
    np.testing.assert_allclose(out0, zeros, rtol=1e-5, atol=1e-6)
    assert heat0.shape == (4, 32, 32) and np.isfinite(heat0).all()


# --- hostile inputs: one line, exit 1, and the run's files untouched ---------------------------------------------


def _copy_run(binary_run, tmp_path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(binary_run[0], run)
    return run


def _report(capsys, *argv) -> tuple[int, list[str], list[str]]:
    code = main(["report", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def test_a_null_score_in_cv_json_is_unknown(binary_run, tmp_path, capsys):
    run = _copy_run(binary_run, tmp_path)
    cv = json.loads((run / "cv.json").read_text())
    (run / "cv.json").write_text(json.dumps({**cv, "fold_mean": None, "overall": None, "folds": {"0": None, "1": 0.7}}))
    code, out, err = _report(capsys, run, "--no-gradcam", "--draws", "10", "--public", "50", "--private", "50")
    assert code == 0, err
    page = Page((run / "report.html").read_text())
    rows = {r[0]: r[1] for r in page.tables["cv"][1:]}
    assert (rows["fold 0"], rows["fold 1"], rows["mean of folds"], rows["pooled out of fold"]) == ("-", 0.7, "-", "-")
    assert "auc - (mean of folds), - pooled" in (run / "report.html").read_text()


def test_odd_fields_in_cv_json_are_one_line(binary_run, tmp_path, capsys):
    run = _copy_run(binary_run, tmp_path)
    cv = json.loads((run / "cv.json").read_text())
    (run / "cv.json").write_text(json.dumps({**cv, "folds": [0.9, 0.8]}))
    assert _report(capsys, run)[::2] == (1, [
        f'kit report: error: {run / "cv.json"}: "folds" is a list, expected an object of fold: score'])


@pytest.mark.parametrize("cell, what", [("", "empty"), ("abc", "not a finite number ('abc')")])
def test_an_empty_or_text_prediction_cell_names_file_row_and_id(binary_run, tmp_path, capsys, cell, what):
    run = _copy_run(binary_run, tmp_path)
    lines = (run / "oof.csv").read_text().splitlines()
    head = lines[0].split(",")
    row = lines[3].split(",")
    row[head.index("pred")] = cell
    lines[3] = ",".join(row)
    (run / "oof.csv").write_text("\n".join(lines) + "\n")
    before = _files(run)
    code, out, err = _report(capsys, run)
    assert (code, err) == (1, [f"kit report: error: {run / 'oof.csv'}: row 3 (id {row[0]}): pred is {what}"])
    assert _files(run) == before  # nothing written


@pytest.mark.parametrize("name", ["oof.csv", "cv.json", "config.toml", "fold0/best.keras", "fold0/history.csv",
                                  "report.json"])
def test_out_never_replaces_a_file_of_the_run(binary_run, tmp_path, capsys, name):
    run = _copy_run(binary_run, tmp_path)
    before = _files(run)
    code, out, err = _report(capsys, run, "--out", run / name)
    assert (code, err) == (1, [f"kit report: error: {run / name}: is a file of the run {run}, not its report; "
                                "write the page to another --out (default RUN/report.html)"])
    assert _files(run) == before


def test_out_replaces_only_a_page_kit_report_wrote(binary_run, tmp_path, capsys):
    run = _copy_run(binary_run, tmp_path)
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    assert _report(capsys, run, "--out", notes)[::2] == (1, [
        f"kit report: error: {notes}: exists and is not a page kit report wrote; write the page to another --out"])
    assert notes.read_text() == "<html>my notes</html>"
    assert _report(capsys, run, "--out", tmp_path)[::2] == (1, [
        f"kit report: error: {tmp_path}: is a folder; --out names the HTML file to write"])
    for out in (run / "other.html", run / "other.html", tmp_path / "notes" / "page.html"):  # its own page: replaced
        code, _, err = _report(capsys, run, "--out", out, "--no-gradcam", "--draws", "10")
        assert code == 0, err


@pytest.mark.parametrize("flags, line", [
    (["--public", "100", "--private", "1e15"], "--private: expects 1 to 1,000,000 images, got 1,000,000,000,000,000"),
    (["--public", "2000000", "--private", "10"], "--public: expects 0 to 1,000,000 images, got 2,000,000"),
    (["--draws", "1e9"], "--draws: expects 2 to 10,000, got 1,000,000,000"),
    (["--draws", "1"], "--draws: expects 2 to 10,000, got 1"),
])
def test_shakeup_work_is_bounded_by_flag(binary_run, tmp_path, capsys, flags, line):
    run = _copy_run(binary_run, tmp_path)
    before = _files(run)
    assert _report(capsys, run, *flags)[::2] == (1, [f"kit report: error: {line}"])
    assert _files(run) == before


def test_the_bounds_in_the_help_are_the_bounds_kit_report_keeps():
    from kit.cli.app import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["report"].format_help()
    assert f"{report.MAX_LEADERBOARD:,}" in " ".join(text.split()) and f"{report.MAX_DRAWS:,}" in text

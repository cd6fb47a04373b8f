"""kit.data.records.Manifest: the one definition of manifest.json, written and read through it, old files included."""

from __future__ import annotations

import json

import pytest

from kit.data import records, synth
from kit.core.errors import KitError
from kit.data.records import ColumnStats, Encoding, FoldInfo, Manifest, MetadataColumns, TrainDuplicate

# A manifest as kit's writer wrote it before it recorded competition, train-only columns, column statistics,
# JPEG settings, duplicates, the kit version or the time (and with class counts as a list, in class order).
OLD = {
    "layout": "ham10000", "source": "/data/ham", "split": "train", "image_size": 64,
    "classes": ["akiec", "bcc", "nv"], "n_classes": 3, "id_name": "image_id", "labelled": True, "n_folds": 2,
    "fold_seed": 7,
    "folds": {"0": {"images": 5, "groups": 3, "class_counts": [1, 1, 3], "shards": ["train00-5.tfrec"]},
              "1": {"images": 4, "groups": 2, "class_counts": [0, 2, 2], "shards": ["train01-4.tfrec"]}},
    "shards": ["train00-5.tfrec", "train01-4.tfrec"], "count": 9,
    "metadata": {"numeric": ["age"], "categorical": {"sex": ["female", "male"]}},
    "skipped": [],
}


def _write(tmp_path, data) -> None:
    (tmp_path / "manifest.json").write_text(data if isinstance(data, str) else json.dumps(data))


def test_written_manifest_round_trips(tmp_path):
    src = synth.make_competition("siim", tmp_path / "siim", n_train=24, n_test=6, size=16, seed=2)
    m = records.write_from_source(src, tmp_path / "rec", n_folds=3, size=16, progress=False, workers=1)
    on_disk = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert m.to_json() == on_disk  # the writer writes exactly the type's JSON
    assert records.read_manifest(tmp_path / "rec") == m == Manifest.from_json(m.to_json(), "here")
    assert m.competition == "siim" and m.layout == "siim" and m.classes == ("benign", "malignant")
    assert m.n_classes == 2 and m.binary and m.fold_ids == [0, 1, 2] and m.count == 24
    assert sum(f.images for f in m.folds.values()) == 24 and all(f.positives is not None for f in m.folds.values())
    assert m.metadata.numeric == ("age_approx",) and m.metadata.categorical["sex"] == ("female", "male")
    assert m.metadata.numeric_stats["age_approx"].missing == 0
    assert m.encoding == Encoding(format="jpeg", quality=95, resize="crop", resample="bicubic", channels=3)
    t = records.write_from_source(src, tmp_path / "test", size=16, test=True, progress=False, workers=1)
    assert t.split == "test" and t.fold_ids == [-1] and t.train_duplicates == ()
    assert records.read_manifest(tmp_path / "test") == t


def test_an_old_manifest_reads_with_defaults(tmp_path):
    _write(tmp_path, OLD)
    m = records.read_manifest(tmp_path)
    assert m.competition is None and m.train_only_columns == () and m.encoding is None
    assert m.duplicates == () and m.train_duplicates is None and m.kit_version is None and m.created is None
    assert m.metadata == MetadataColumns(("age",), {"sex": ("female", "male")}, {})
    # one form for class counts: by class name, whichever form the file holds
    assert m.folds[0] == FoldInfo(images=5, shards=("train00-5.tfrec",), groups=3,
                                  class_counts={"akiec": 1, "bcc": 1, "nv": 3})
    assert m.to_json()["folds"]["1"]["class_counts"] == {"akiec": 0, "bcc": 2, "nv": 2}
    bare = {"image_size": 32, "shards": ["test00-3.tfrec"], "split": "test", "classes": ["0", "1"]}
    _write(tmp_path, bare)
    b = records.read_manifest(tmp_path)
    assert (b.n_classes, b.id_name, b.labelled, b.folds, b.count, b.metadata) == (2, "image_name", True, {}, 0,
                                                                                  MetadataColumns())


@pytest.mark.parametrize("change,field,expected", [
    ({"image_size": "64"}, "'image_size' is str \"64\"", "an integer"),
    ({"folds": {"0": {"groups": 3, "shards": []}}}, "no 'folds.0.images'", ""),
    ({"folds": {"0": {"images": 5, "class_counts": [1, 2]}}}, "'folds.0.class_counts' is list", "one count per class"),
    ({"folds": {"x": {"images": 5}}}, "'folds' has key 'x'", "fold numbers"),
    ({"metadata": {"numeric": "age"}}, "'metadata.numeric' is str", "a list of strings"),
    ({"metadata": {"categorical": {"sex": [1, 2]}}}, "'metadata.categorical.sex' is list", "a list of strings"),
    ({"labelled": "yes"}, "'labelled' is str", "true or false"),
    ({"train_duplicates": [{"image_name": "a"}]}, "'train_duplicates' is list", "image_name, train_image_name"),
    ({"encoding": {"quality": 9.5}}, "'encoding.quality' is float", "an integer"),
    ({"metadata": []}, "'metadata' is list", "an object"),
])
def test_a_damaged_field_is_one_line_naming_the_file_and_the_field(tmp_path, change, field, expected):
    _write(tmp_path, {**OLD, **change})
    with pytest.raises(KitError) as err:
        records.read_manifest(tmp_path)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{tmp_path / 'manifest.json'}: not a kit manifest (")
    assert field in line and expected in line and line.endswith("; write the records again")


@pytest.mark.parametrize("text,why", [("{", "not valid JSON"), ("[]", "a JSON list, not an object"),
                                      ('{"shards": []}', "no 'image_size'")])
def test_not_a_manifest_is_one_line(tmp_path, text, why):
    _write(tmp_path, text)
    with pytest.raises(KitError, match=f"^{tmp_path / 'manifest.json'}: .*{why}"):
        records.read_manifest(tmp_path)


def test_hand_built_manifest_serialises_what_it_holds():
    m = Manifest(image_size=16, shards=("test00-2.tfrec",), split="test", classes=("a", "b", "c"),
                 folds={-1: FoldInfo(images=2, shards=("test00-2.tfrec",))},
                 metadata=MetadataColumns(("age",), {}, {"age": ColumnStats(40.0, 5.0, 1)}),
                 train_duplicates=(TrainDuplicate("t1", "r9"),))
    assert m.n_classes == 3 and not m.binary and not m.public
    data = m.to_json()
    assert data["train_duplicates"] == [{"image_name": "t1", "train_image_name": "r9"}]
    assert data["metadata"]["numeric_stats"] == {"age": {"mean": 40.0, "std": 5.0, "missing": 1}}
    assert "encoding" not in data and Manifest.from_json(data, "x") == m
    with pytest.raises(KitError, match="no fold 3 in the records \\(folds: -1\\)"):
        m.fold(3)


def test_write_encoded_keeps_the_callers_folds_and_writes_the_same_manifest(tmp_path):
    import io

    import numpy as np
    import pandas as pd
    from PIL import Image

    from kit.data import imaging, sources

    def png(v: int) -> bytes:
        out = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(out, format="PNG")
        return out.getvalue()

    table = pd.DataFrame({"image_name": [f"i{k}" for k in range(6)], "target": [0, 2, 1, 2, 2, 0],
                          "fold": [0, 0, 0, 1, 1, 1], "group": ["a", "a", "b", "c", "d", "d"],
                          "age": [30.0, 50.0, float("nan"), 40.0, 40.0, 60.0]})
    src = sources.Source(table=table, classes=["x", "y", "z"], layout="csv", id_name="image_name",
                         numeric=["age"], root="memory")
    m = records.write_encoded(src, [png(10 * k) for k in range(6)], tmp_path / "rec", size=8, n_folds=2, fmt="png")
    assert m == records.read_manifest(tmp_path / "rec") and m.shards == ("train00-3.tfrec", "train01-3.tfrec")
    assert m.folds[0] == FoldInfo(images=3, shards=("train00-3.tfrec",), groups=2,
                                  class_counts={"x": 1, "y": 1, "z": 1})
    assert m.folds[1].class_counts == {"x": 1, "y": 0, "z": 2} and m.encoding.format == "png"
    assert m.metadata.numeric_stats["age"] == ColumnStats(mean=44.0, std=pytest.approx(10.198, abs=1e-3), missing=1)
    assert [imaging.count_tfrecords(tmp_path / "rec" / s) for s in m.shards] == [3, 3]
    with pytest.raises(KitError, match="5 images for 6 rows"):
        records.write_encoded(src, [png(0)] * 5, tmp_path / "other", size=8, n_folds=2)

"""Every layout reads into one table; auto-detection; bad input names its file, line or column."""

import shutil

import pandas as pd
import pytest

from kit.data import sources, synth
from kit.core.errors import KitError

COLUMNS = ["image_name", "path", "target", "group"]


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    base = tmp_path_factory.mktemp("comps")
    return {layout: synth.make_competition(layout, base / layout, n_train=24, n_test=8, size=16)
            for layout in synth.LAYOUTS}


def test_siim_train_and_test(comps):
    root = comps["siim"]
    src = sources.load_source(root)
    csv = pd.read_csv(root / "train.csv")
    assert (src.layout, src.id_name, src.classes, src.labelled) == ("siim", "image_name", ["benign", "malignant"], True)
    assert list(src.table.columns) == COLUMNS + ["age_approx", "sex", "anatom_site_general_challenge"]
    assert list(src.table.image_name) == list(csv.image_name)
    assert list(src.table.target) == list(csv.target)
    assert list(src.table.group) == list(csv.patient_id)
    assert src.table.path.iloc[0] == str((root / "jpeg" / "train" / f"{csv.image_name[0]}.jpg").resolve())
    test = sources.load_source(root, test=True)
    assert not test.labelled and (test.table.target == -1).all()
    assert list(test.table.image_name) == list(pd.read_csv(root / "sample_submission.csv").image_name)
    # Train and test share one code table per categorical column.
    assert src.categories == test.categories and src.categories["sex"] == ["female", "male"]


def test_ham10000_groups_by_lesion_over_both_folders(comps):
    root = comps["ham10000"]
    src = sources.load_source(root)
    meta = pd.read_csv(root / "HAM10000_metadata.csv")
    assert (src.layout, src.id_name, src.classes) == ("ham10000", "image_id", synth.HAM_CLASSES)
    assert list(src.table.image_name) == list(meta.image_id)
    assert [src.classes[t] for t in src.table.target] == list(meta.dx)
    assert list(src.table.group) == list(meta.lesion_id)
    assert {p.split("/")[-2] for p in src.table.path} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    with pytest.raises(KitError, match="no test split"):
        sources.load_source(root, test=True)


def test_pcam_ids_are_groups_and_test_follows_the_sample(comps):
    root = comps["pcam"]
    src = sources.load_source(root)
    labels = pd.read_csv(root / "train_labels.csv", dtype={"id": str})
    assert (src.layout, src.id_name, src.classes) == ("pcam", "id", ["0", "1"])
    assert list(src.table.image_name) == list(labels.id) and list(src.table.target) == list(labels.label)
    assert list(src.table.group) == list(labels.id)
    test = sources.load_source(root, test=True)
    assert list(test.table.image_name) == list(pd.read_csv(root / "sample_submission.csv", dtype={"id": str}).id)


@pytest.mark.parametrize("layout,classes", [("isic9", synth.ISIC9_CLASSES), ("melanoma10k", ["Benign", "Malignant"])])
def test_class_folders_with_labelled_test(comps, layout, classes):
    src = sources.load_source(comps[layout])
    assert (src.layout, src.id_name, src.classes) == ("folders", "id", classes)
    for name, path, target in zip(src.table.image_name, src.table.path, src.table.target):
        assert path.endswith(f"/{classes[target]}/{name}.jpg")
    assert list(src.table.group) == list(src.table.image_name)
    test = sources.load_source(comps[layout], test=True)
    assert test.labelled and test.classes == classes and len(test.table) == 8


@pytest.mark.parametrize("layout,expected", [("siim", "siim"), ("ham10000", "ham10000"), ("pcam", "pcam"),
                                             ("isic9", "folders"), ("melanoma10k", "folders")])
def test_auto_detects_every_layout(comps, layout, expected):
    assert sources.detect_layout(comps[layout]) == expected


def test_csv_layout_with_named_columns(comps, tmp_path):
    root = comps["siim"]
    df = pd.read_csv(root / "train.csv").rename(columns={"image_name": "file", "target": "y", "patient_id": "pid"})
    df["file"] = df["file"] + ".jpg"
    df.to_csv(tmp_path / "labels.csv", index=False)
    src = sources.load_source(tmp_path / "labels.csv", layout="csv", id_col="file", label_col="y", group_col="pid",
                              images=root / "jpeg" / "train")
    assert src.layout == "csv" and src.id_name == "file" and src.classes == ["0", "1"]
    assert list(src.table.group) == list(df.pid) and list(src.table.target) == list(df.y)
    assert "age_approx" in src.numeric and "sex" in src.categorical


@pytest.mark.parametrize("layout", ["siim", "pcam", "isic9", "melanoma10k"])
def test_train_split_of_a_test_split_is_the_train_split(comps, layout):
    train = sources.train_split_of(sources.load_source(comps[layout], test=True))
    expected = sources.load_source(comps[layout]).table
    assert train is not None and train.labelled
    assert list(train.table.image_name) == list(expected.image_name) and list(train.table.path) == list(expected.path)


def test_train_split_of_is_none_where_the_download_has_none(comps, tmp_path):
    root = comps["siim"]
    pd.read_csv(root / "test.csv").to_csv(tmp_path / "test.csv", index=False)  # a lone test CSV: no train.csv
    lone = sources.load_source(tmp_path / "test.csv", layout="csv", id_col="image_name", test=True,
                               images=root / "jpeg" / "test")
    assert sources.train_split_of(lone) is None
    siim_test = sources.load_source(tmp_path / "test.csv", layout="siim", test=True, images=root / "jpeg" / "test")
    assert sources.train_split_of(siim_test) is None  # tmp_path has no train.csv beside it


def _copy(comps, layout, tmp_path):
    return shutil.copytree(comps[layout], tmp_path / layout)


def test_missing_column_names_it(comps, tmp_path):
    root = _copy(comps, "siim", tmp_path)
    pd.read_csv(root / "train.csv").drop(columns=["patient_id"]).to_csv(root / "train.csv", index=False)
    with pytest.raises(KitError, match=r"train\.csv: missing column 'patient_id'"):
        sources.load_source(root, layout="siim")


def test_missing_image_names_the_line_unless_skipped(comps, tmp_path):
    root = _copy(comps, "siim", tmp_path)
    name = pd.read_csv(root / "train.csv").image_name[3]
    (root / "jpeg" / "train" / f"{name}.jpg").unlink()
    with pytest.raises(KitError, match=rf"train\.csv: line 5: image '{name}' not found"):
        sources.load_source(root)
    src = sources.load_source(root, skip_bad=True)
    assert len(src.table) == 23 and name not in set(src.table.image_name)
    assert src.skipped[0]["path"].endswith(name) and "not found" in src.skipped[0]["reason"]


def test_duplicate_id_names_both_lines(comps, tmp_path):
    root = _copy(comps, "ham10000", tmp_path)
    meta = pd.read_csv(root / "HAM10000_metadata.csv")
    meta.loc[6, "image_id"] = meta.image_id[2]
    meta.to_csv(root / "HAM10000_metadata.csv", index=False)
    with pytest.raises(KitError, match=rf"line 8: duplicate image_id '{meta.image_id[2]}' \(also on line 4\)"):
        sources.load_source(root)


def test_missing_label_names_the_line_and_column(comps, tmp_path):
    root = _copy(comps, "pcam", tmp_path)
    labels = pd.read_csv(root / "train_labels.csv", dtype={"id": str})
    labels["label"] = labels["label"].astype("float")
    labels.loc[9, "label"] = None
    labels.to_csv(root / "train_labels.csv", index=False)
    with pytest.raises(KitError, match=r"train_labels\.csv: line 11: missing label in column 'label'"):
        sources.load_source(root)


def test_unknown_label_is_refused(comps, tmp_path):
    root = _copy(comps, "ham10000", tmp_path)
    meta = pd.read_csv(root / "HAM10000_metadata.csv")
    meta.loc[0, "dx"] = "melanoma"
    meta.to_csv(root / "HAM10000_metadata.csv", index=False)
    with pytest.raises(KitError, match=r"line 2: label 'melanoma' in column 'dx' is not one of akiec"):
        sources.load_source(root)


def test_empty_folders_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(KitError, match="cannot recognise the layout"):
        sources.load_source(tmp_path / "empty")
    for c in ("Benign", "Malignant"):
        (tmp_path / "cls" / "train" / c).mkdir(parents=True)
    (tmp_path / "cls" / "train" / "Benign" / "notes.txt").write_text("not an image")
    with pytest.raises(KitError, match=r"train/Benign: empty class folder"):
        sources.load_source(tmp_path / "cls", layout="folders")


def test_unknown_layout_lists_the_known_ones(comps):
    with pytest.raises(KitError, match="--layout dicom: unknown layout; known: auto, siim"):
        sources.load_source(comps["siim"], layout="dicom")


def test_a_zip_wrapper_folder_is_stepped_into(comps, tmp_path):
    shutil.copytree(comps["isic9"], tmp_path / "Skin cancer ISIC The International Skin Imaging Collaboration")
    src = sources.load_source(tmp_path)
    assert src.layout == "folders" and len(src.table) == 25 and src.classes == synth.ISIC9_CLASSES

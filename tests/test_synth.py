"""Synthetic competitions: exact layouts and columns, determinism, the public SIIM-ISIC schema."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.data import synth


def _tree_digest(root):
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_siim_layout_columns_and_rare_positives(tmp_path):
    root = synth.make_competition("siim", tmp_path, n_train=40, n_test=10, size=32)
    train = pd.read_csv(root / "train.csv")
    assert list(train.columns) == ["image_name", "patient_id", "sex", "age_approx",
                                   "anatom_site_general_challenge", "diagnosis", "benign_malignant", "target"]
    assert list(pd.read_csv(root / "test.csv").columns) == ["image_name", "patient_id", "sex", "age_approx",
                                                            "anatom_site_general_challenge"]
    sample = pd.read_csv(root / "sample_submission.csv")
    assert list(sample.columns) == ["image_name", "target"] and len(sample) == 10
    assert sorted(p.stem for p in (root / "jpeg" / "train").glob("*.jpg")) == sorted(train.image_name)
    assert len(list((root / "jpeg" / "test").glob("*.jpg"))) == 10
    assert train.target.sum() == 10  # rare, yet enough for AUC in every fold of a tiny set
    assert (train.groupby("patient_id").size() >= 2).all()
    assert set(train.benign_malignant) == {"benign", "malignant"}
    assert (train.target == (train.benign_malignant == "malignant")).all()


def test_ham10000_layout_two_image_folders_and_lesions(tmp_path):
    root = synth.make_competition("ham10000", tmp_path, n_train=30, size=24)
    meta = pd.read_csv(root / "HAM10000_metadata.csv")
    assert list(meta.columns) == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    assert set(meta.dx) == set(synth.HAM_CLASSES)
    part1 = list((root / "HAM10000_images_part_1").glob("*.jpg"))
    part2 = list((root / "HAM10000_images_part_2").glob("*.jpg"))
    assert len(part1) == 15 and len(part2) == 15
    assert meta.groupby("lesion_id").size().max() > 1
    assert Image.open(part1[0]).size == (32, 24)  # 4:3 like the real images


def test_pcam_tif_tiles_and_hex_ids(tmp_path):
    root = synth.make_competition("pcam", tmp_path, n_train=10, n_test=4)
    labels = pd.read_csv(root / "train_labels.csv", dtype={"id": str})
    assert list(labels.columns) == ["id", "label"] and labels.label.sum() == 4
    assert all(len(i) == 40 and int(i, 16) >= 0 for i in labels.id)
    im = Image.open(root / "train" / f"{labels.id[0]}.tif")
    assert im.format == "TIFF" and im.size == (96, 96) and im.mode == "RGB"
    sample = pd.read_csv(root / "sample_submission.csv")
    assert list(sample.columns) == ["id", "label"] and len(list((root / "test").glob("*.tif"))) == 4


def test_pcam_signal_is_in_the_centre_only(tmp_path):
    root = synth.make_competition("pcam", tmp_path, n_train=20, n_test=0, size=48)
    labels = pd.read_csv(root / "train_labels.csv", dtype={"id": str})
    dark = {0: [], 1: []}
    for pid, y in zip(labels.id, labels.label):
        a = np.asarray(Image.open(root / "train" / f"{pid}.tif"), np.float32).mean(2)
        dark[y].append(((a[16:32, 16:32] < 120).mean(), (a[:12] < 120).mean()))
    centre = {y: np.mean([c for c, _ in v]) for y, v in dark.items()}
    border = {y: np.mean([b for _, b in v]) for y, v in dark.items()}
    assert centre[1] > 0.2 > centre[0] + 0.1
    assert abs(border[1] - border[0]) < 0.02


@pytest.mark.parametrize("layout,split,classes", [
    ("isic9", "Train", synth.ISIC9_CLASSES), ("melanoma10k", "train", ["Benign", "Malignant"])])
def test_class_folder_layouts(tmp_path, layout, split, classes):
    root = synth.make_competition(layout, tmp_path, n_train=20, n_test=9, size=16)
    assert sorted(p.name for p in (root / split).iterdir()) == sorted(classes)
    test = "Test" if split == "Train" else "test"
    assert sum(len(list(d.glob("*.jpg"))) for d in (root / test).iterdir()) == 9


def test_isic9_plants_one_byte_identical_copy(tmp_path):
    root = synth.make_competition("isic9", tmp_path, n_train=20, n_test=0, size=16)
    files = list((root / "Train").glob("*/*.jpg"))
    digests = [hashlib.sha1(f.read_bytes()).hexdigest() for f in files]
    assert len(files) == 21 and len(set(digests)) == 20


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = synth.make_competition("siim", tmp_path / "a", n_train=12, n_test=4, size=16, seed=3)
    b = synth.make_competition("siim", tmp_path / "b", n_train=12, n_test=4, size=16, seed=3)
    c = synth.make_competition("siim", tmp_path / "c", n_train=12, n_test=4, size=16, seed=4)
    assert _tree_digest(a) == _tree_digest(b) != _tree_digest(c)


# Digests of the default (overlap=0) output, taken before overlapping cues existed: the default must
# stay byte-for-byte what other tests and notebooks were written against. They pin Pillow's JPEG
# encoder too; recompute them only when Pillow itself changes.
_FROZEN = {"siim": "8843e25f41c0dad807432b5426338a027257ca09", "melanoma10k": "ae1c8717ba8093010a4a9ab340ceac4cd9fde4f1"}


@pytest.mark.parametrize("layout", sorted(_FROZEN))
def test_overlap_zero_keeps_the_old_bytes(tmp_path, layout):
    default = synth.make_competition(layout, tmp_path / "d", n_train=24, n_test=8, size=32, seed=5)
    explicit = synth.make_competition(layout, tmp_path / "e", n_train=24, n_test=8, size=32, seed=5, overlap=0.0)
    assert _tree_digest(default) == _tree_digest(explicit) == _FROZEN[layout]


def test_overlap_changes_images_deterministically_by_seed(tmp_path):
    kw = dict(n_train=24, n_test=8, size=32)
    a = synth.make_competition("siim", tmp_path / "a", seed=5, overlap=0.7, **kw)
    b = synth.make_competition("siim", tmp_path / "b", seed=5, overlap=0.7, **kw)
    c = synth.make_competition("siim", tmp_path / "c", seed=6, overlap=0.7, **kw)
    d = synth.make_competition("siim", tmp_path / "d", seed=5, overlap=0.4, **kw)
    assert _tree_digest(a) == _tree_digest(b)
    assert len({_tree_digest(a), _tree_digest(c), _tree_digest(d), _FROZEN["siim"]}) == 4
    # same layout and class balance as without overlap
    train = pd.read_csv(a / "train.csv")
    assert train.target.sum() == 8 and len(list((a / "jpeg" / "test").glob("*.jpg"))) == 8
    m = synth.make_competition("melanoma10k", tmp_path / "m", seed=5, overlap=0.7, **kw)
    assert _tree_digest(m) != _FROZEN["melanoma10k"]
    assert len(list((m / "train" / "Malignant").glob("*.jpg"))) + len(list((m / "train" / "Benign").glob("*.jpg"))) == 24


def test_overlapping_cues_differ_in_mean_and_overlap_in_range():
    rng = np.random.default_rng(0)
    cues = {t: np.array([(s[1], s[2], s[3], v) for s, v in (synth.binary_cue_style(rng, t, 0.7) for _ in range(400))])
            for t in (0, 1)}
    benign, malignant = cues[0], cues[1]
    # every cue (size, border, asymmetry, colour variety) is larger on average for melanomas ...
    gap = malignant.mean(0) - benign.mean(0)
    assert (gap > 0.4 * (malignant.max(0) - benign.min(0))).all(), gap
    # ... yet some naevi are larger than the median melanoma, and some melanomas smaller than the median naevus
    assert 0.05 < (benign[:, 0] > np.median(malignant[:, 0])).mean() < 0.4
    assert 0.05 < (malignant[:, 0] < np.median(benign[:, 0])).mean() < 0.4
    # overlap 0 is the fixed look: no spread at all
    fixed = np.array([synth.binary_cue_style(rng, 1, 1e-9)[0][1] for _ in range(5)])
    assert np.ptp(fixed) < 1e-6


def test_overlap_is_refused_where_it_has_no_meaning(tmp_path):
    with pytest.raises(ValueError, match="overlap applies to the binary lesion layouts"):
        synth.make_competition("ham10000", tmp_path, n_train=8, overlap=0.5)
    with pytest.raises(ValueError, match="finite overlap >= 0"):
        synth.make_competition("siim", tmp_path, n_train=8, overlap=-0.1)


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic layout 'kvasir'"):
        synth.make_competition("kvasir", tmp_path)


def test_public_siim_tfrecords_parse_with_the_public_schema(tmp_path):
    tf = pytest.importorskip("tensorflow")
    paths = synth.write_public_siim_tfrecords(tmp_path, n_images=30, n_shards=3, size=24)
    assert [p.name.split("-")[0] for p in paths] == ["train00", "train01", "train02"]
    spec = {k: tf.io.FixedLenFeature([], tf.string if v == "bytes" else tf.int64)
            for k, v in synth.PUBLIC_SIIM_FIELDS.items()}
    seen, patients_per_shard = 0, []
    for p in paths:
        pats = set()
        for rec in tf.data.TFRecordDataset(str(p)):
            ex = tf.io.parse_single_example(rec, spec)
            assert tf.io.decode_jpeg(ex["image"]).shape == (24, 24, 3)
            pats.add(int(ex["patient_id"]))
            seen += 1
        patients_per_shard.append(pats)
        assert int(p.name.split("-")[1].split(".")[0]) == sum(1 for _ in tf.data.TFRecordDataset(str(p)))
    assert seen == 30
    assert not (patients_per_shard[0] & patients_per_shard[1]) and not (patients_per_shard[1] & patients_per_shard[2])

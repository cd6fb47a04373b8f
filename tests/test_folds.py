"""Folds: groups never split, classes and group sizes balanced, seeded; the leakage check."""

import numpy as np
import pandas as pd
import pytest

from kit.data import folds, sources, synth
from kit.core.errors import KitError


def _table(n_groups=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        size = int(rng.choice([1, 2, 3, 8]))
        pos = rng.uniform() < 0.2
        for i in range(size):
            rows.append({"image_name": f"img{g}_{i}", "group": f"P{g}", "target": int(pos and i == 0)})
    return pd.DataFrame(rows)


def test_no_group_in_two_folds_and_balanced():
    table = _table()
    table["fold"] = folds.assign_folds(table, 5, seed=1, digests=[""] * len(table))
    assert table.groupby("group").fold.nunique().max() == 1
    per_fold = table.groupby("fold").agg(images=("target", "size"), pos=("target", "sum"))
    assert per_fold.images.max() - per_fold.images.min() <= 8  # the largest group is 8 images
    assert per_fold.pos.max() - per_fold.pos.min() <= 1
    # Images per group ("triple stratified"): every fold gets some of the 8-image patients.
    big = table[table.groupby("group").image_name.transform("size") == 8]
    assert big.fold.nunique() == 5
    folds.check_leakage(table, digests=[""] * len(table))


def test_same_seed_same_folds_other_seed_differs():
    table = _table()
    a = folds.assign_folds(table, 5, seed=7, digests=[""] * len(table))
    b = folds.assign_folds(table, 5, seed=7, digests=[""] * len(table))
    c = folds.assign_folds(table, 5, seed=8, digests=[""] * len(table))
    assert (a == b).all() and (a != c).any()


def test_multiclass_every_class_in_every_fold(tmp_path):
    root = synth.make_competition("isic9", tmp_path, n_train=90, n_test=0, size=16)
    src = sources.load_source(root)
    src.table["fold"] = folds.assign_folds(src.table, 5, seed=42)
    counts = pd.crosstab(src.table.fold, src.table.target)
    assert counts.shape == (5, 9) and counts.to_numpy().min() >= 1


def test_byte_identical_images_share_a_fold(tmp_path):
    root = synth.make_competition("isic9", tmp_path, n_train=40, n_test=0, size=16)
    src = sources.load_source(root)
    table = src.table
    copy = table.image_name.str.endswith("_copy")
    original = table.image_name == table.image_name[copy].iloc[0][: -len("_copy")]
    for seed in range(5):
        f = folds.assign_folds(table, 5, seed=seed)
        assert f[copy.to_numpy()][0] == f[original.to_numpy()][0]


def test_leakage_check_catches_a_planted_group_crossing():
    table = _table()
    table["fold"] = folds.assign_folds(table, 5, seed=1, digests=[""] * len(table))
    victim = table.group.value_counts().index[0]  # an 8-image patient
    row = table.index[table.group == victim][-1]
    table.loc[row, "fold"] = (table.loc[row, "fold"] + 1) % 5
    with pytest.raises(KitError, match=rf"leak: group '{victim}' is in folds \d \(img\d+_0\) and \d \(img\d+_7\)"):
        folds.check_leakage(table, digests=[""] * len(table))


def test_leakage_check_catches_a_duplicate_image_across_folds(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    table = pd.DataFrame({"image_name": ["a", "b"], "group": ["a", "b"], "target": [0, 0], "fold": [0, 1],
                          "path": [str(a), str(b)]})
    with pytest.raises(KitError, match=r"leak: a \(fold 0\) and b \(fold 1\) are the same image \(sha1 "):
        folds.check_leakage(table)


def test_too_few_groups_for_the_folds():
    table = pd.DataFrame({"image_name": list("abcd"), "group": ["g1", "g1", "g2", "g3"], "target": [0, 1, 0, 1]})
    with pytest.raises(KitError, match="--folds 5: only 3 groups"):
        folds.assign_folds(table, 5, digests=[""] * 4)


def test_only_files_with_a_colliding_size_are_hashed(tmp_path):
    for name, data in {"a": b"12345", "b": b"12345", "c": b"54321", "d": b"123", "e": b""}.items():
        (tmp_path / name).write_bytes(data)
    d = folds.file_digests([tmp_path / n for n in "abcde"])
    assert d[0] == d[1] != d[2] and d[2] and d[3] == "" and d[4] == ""


def test_paired_digests_read_only_sizes_shared_with_the_test_side(tmp_path, monkeypatch):
    files = {"t1": b"AAAAA", "t2": b"BBBBBBB", "t3": b"CC", "t4": b"DD",    # test: t3/t4 collide in size only
             "r1": b"AAAAA", "r2": b"XXXXXXX", "r3": b"EEEEEEEEE", "r4": b"FFFFFFFFF", "r5": b"AAAAA"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    read = []
    real = folds.file_digest
    monkeypatch.setattr(folds, "file_digest", lambda p: read.append(p.rsplit("/", 1)[-1]) or real(p))
    test = [tmp_path / n for n in ("t1", "t2", "t3", "t4")]
    train = [tmp_path / n for n in ("r1", "r2", "r3", "r4", "r5")]
    d, td = folds.paired_digests(test, train)
    # r3/r4 share a size but no test file has it: duplicates within train are not looked for.
    assert sorted(read) == ["r1", "r2", "r5", "t1", "t2", "t3", "t4"]
    assert td[2] == td[3] == "" and d[2] != d[3]
    pairs = folds.train_duplicates(["t1", "t2", "t3", "t4"], d, ["r1", "r2", "r3", "r4", "r5"], td)
    assert pairs == [{"image_name": "t1", "train_image_name": "r1"}]  # r5 too, but r1 comes first
    assert folds.train_duplicates(["t1"], [""], ["r1"], [""]) == []

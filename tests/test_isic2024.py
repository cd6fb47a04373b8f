"""ISIC 2024 (3D-TBP): the HDF5 layout, train-only columns, bad downloads, and balanced epochs at rare positives."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from kit.data import imaging, records, sources, synth
from kit.training import train
from kit.cli.app import main
from kit.training.config import Config
from kit.core.errors import KitError


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    return synth.make_competition("isic2024", tmp_path_factory.mktemp("isic2024") / "dl", n_train=60, n_test=5,
                                  size=32, seed=3, image_store="both")


def test_the_download_has_the_exact_columns_and_train_only_ones_are_found(download):
    train_cols = list(pd.read_csv(download / "train-metadata.csv", nrows=0).columns)
    test_cols = list(pd.read_csv(download / "test-metadata.csv", nrows=0).columns)
    assert (len(train_cols), len(test_cols)) == (55, 44)
    src = sources.load_source(download)
    assert src.layout == "isic2024" and src.table["target"].sum() > 0
    assert set(src.train_only) == set(train_cols) - set(test_cols)
    assert len(src.train_only) == 11
    used = set(src.numeric) | set(src.categorical)
    # iddx_1 and mel_thick_mm give the label away in train: never metadata inputs
    assert not used & set(src.train_only) and {"tbp_lv_areaMM2", "age_approx", "sex"} <= used
    assert src.table["age_approx"].isna().any()  # the literal NA is missing, not a category


def test_both_image_sources_give_the_same_records(download, tmp_path):
    from_h5 = records.write_from_source(download, tmp_path / "h5", n_folds=2, size=32, progress=False)
    only_jpg = tmp_path / "jpg"
    only_jpg.mkdir()
    for name in ("train-metadata.csv", "test-metadata.csv"):
        (only_jpg / name).write_bytes((download / name).read_bytes())
    (only_jpg / "train-image").symlink_to(download / "train-image")
    from_jpg = records.write_from_source(only_jpg, tmp_path / "jpgrec", n_folds=2, size=32, progress=False)
    assert from_h5.competition == "isic2024" and from_h5.train_only_columns == from_jpg.train_only_columns
    a = sorted(p.read_bytes() for p in (tmp_path / "h5").glob("*.tfrec"))
    b = sorted(p.read_bytes() for p in (tmp_path / "jpgrec").glob("*.tfrec"))
    assert a == b


def test_a_jpeg_of_the_records_size_goes_in_as_it_is(tmp_path):
    rng = np.random.default_rng(0)
    img = synth.lesion_image(rng, 32, 32, synth._skin(rng), synth._BINARY_STYLE[1])
    jpeg = synth._jpeg_bytes(img)
    with h5py.File(tmp_path / "x.hdf5", "w") as f:
        f.create_dataset("ISIC_0000001", data=np.bytes_(jpeg))
    member = imaging.hdf5_member(tmp_path / "x.hdf5", "ISIC_0000001")
    assert imaging.read_image_bytes(member) == jpeg and imaging.image_byte_size(member) == len(jpeg)
    (example, reason), = imaging.make_records([(member, {"image_name": "ISIC_0000001"})], 32)
    assert reason == "" and jpeg in example  # stored byte for byte: no second JPEG generation
    (resized, _), = imaging.make_records([(member, {"image_name": "ISIC_0000001"})], 24)
    assert jpeg not in resized


def _copy(download, tmp_path):
    out = tmp_path / "dl"
    out.mkdir()
    for name in ("train-metadata.csv", "test-metadata.csv", "train-image.hdf5", "test-image.hdf5"):
        (out / name).write_bytes((download / name).read_bytes())
    return out


def _error(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "img/s" not in line]  # progress bars
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("store", ["fixed_string", "opaque", "uint8_array", "compressed_chunks", "trailing_nuls"])
def test_hdf5_members_read_as_h5py_gives_them(tmp_path, store):
    """The direct read of contiguous members (offset + pread) gives exactly h5py's bytes; other layouts fall back."""
    jpeg = b"\xff\xd8" + bytes(range(256)) * 3 + b"\x00\xff\xd9"
    value = {
        "fixed_string": np.bytes_(jpeg),
        "opaque": np.void(jpeg),
        "uint8_array": np.frombuffer(jpeg, np.uint8),
        "compressed_chunks": np.frombuffer(jpeg, np.uint8),
        "trailing_nuls": np.bytes_(b"ab\x00\x00"),
    }[store]
    path = tmp_path / "train-image.hdf5"
    with h5py.File(path, "w") as f:
        extra = dict(chunks=(128,), compression="gzip") if store == "compressed_chunks" else {}
        f.create_dataset("ISIC_0000001", data=value, **extra)
    with h5py.File(path, "r") as f:
        expected = f["ISIC_0000001"][()]
        expected = bytes(expected.tobytes() if hasattr(expected, "tobytes") else expected)
    member = imaging.hdf5_member(path, "ISIC_0000001")
    assert imaging.read_image_bytes(member) == expected
    assert imaging.image_byte_size(member) == len(expected) + (2 if store == "trailing_nuls" else 0)
    with pytest.raises(OSError, match="no key 'ISIC_0000002'"):
        imaging.read_image_bytes(imaging.hdf5_member(path, "ISIC_0000002"))


def test_a_metadata_row_without_an_image_names_its_id(download, tmp_path, capsys):
    dl = _copy(download, tmp_path)
    with h5py.File(dl / "train-image.hdf5", "a") as f:
        first = sorted(f.keys())[0]
        del f[first]
    err = _error(capsys, "records", dl, "--out", tmp_path / "rec")
    assert f"isic_id '{first}' has no image in train-image.hdf5" in err
    assert not (tmp_path / "rec").exists()


def test_an_image_without_a_metadata_row_names_its_key(download, tmp_path, capsys):
    dl = _copy(download, tmp_path)
    with h5py.File(dl / "train-image.hdf5", "a") as f:
        f.create_dataset("ISIC_9999999", data=np.bytes_(b"\xff\xd8"))
    assert "key 'ISIC_9999999' has no row in train-metadata.csv" in _error(capsys, "records", dl, "--out", tmp_path / "r")


def test_an_undecodable_image_names_its_id(download, tmp_path, capsys):
    dl = _copy(download, tmp_path)
    with h5py.File(dl / "train-image.hdf5", "a") as f:
        key = sorted(f.keys())[3]
        del f[key]
        f.create_dataset(key, data=np.bytes_(b"not a jpeg at all"))
    err = _error(capsys, "records", dl, "--out", tmp_path / "r")
    assert key in err and "not an image" in err


def test_a_truncated_hdf5_file_is_named(download, tmp_path, capsys):
    dl = _copy(download, tmp_path)
    data = (dl / "train-image.hdf5").read_bytes()
    (dl / "train-image.hdf5").write_bytes(data[: len(data) // 3])
    assert "train-image.hdf5: not a readable HDF5 file" in _error(capsys, "records", dl, "--out", tmp_path / "r")


@pytest.mark.parametrize("change, message", [
    (lambda df: df.assign(isic_id=[df["isic_id"][0]] + list(df["isic_id"][1:]))
     .pipe(lambda d: d.assign(isic_id=d["isic_id"].where(d.index != 1, d["isic_id"][0]))), "duplicate isic_id"),
    (lambda df: df.assign(target=df["target"].where(df.index != 4, 2)), "line 6: label '2' in column 'target'"),
])
def test_bad_metadata_rows_name_the_line(download, tmp_path, capsys, change, message):
    dl = _copy(download, tmp_path)
    df = pd.read_csv(dl / "train-metadata.csv", dtype={"isic_id": str})
    change(df).to_csv(dl / "train-metadata.csv", index=False, na_rep="NA")
    assert message in _error(capsys, "records", dl, "--out", tmp_path / "r")


# --- training at rare positives -----------------------------------------------------------------------------


def test_named_metadata_inputs_are_exactly_those_and_train_only_ones_are_refused(download, tmp_path, capsys):
    records.write_from_source(download, tmp_path / "rec", n_folds=2, size=32, progress=False)
    cfg = Config(records=str(tmp_path / "rec"), out=str(tmp_path / "run"), model="tiny_cnn",
                 meta_columns=("sex", "age_approx", "tbp_lv_areaMM2"))
    resolved, _ = train.resolve(cfg)
    # naming columns turns metadata on; they come in the records' order, with their statistics only
    assert resolved.meta and resolved.meta_numeric == ("age_approx", "tbp_lv_areaMM2")
    assert list(resolved.meta_categorical) == ["sex"] and set(resolved.meta_stats) == {"age_approx", "tbp_lv_areaMM2"}
    # iddx_1 gives the label away in train and is missing from the test download
    line = _error(capsys, "train", "--records", tmp_path / "rec", "--out", tmp_path / "leak", "--model", "tiny_cnn",
                  "--meta-columns", "age_approx", "iddx_1")
    assert line == ("kit train: error: meta_columns: 'iddx_1' is in the train download only (not in the test one), "
                    "so it can never be a model input")
    assert "'colour' is not a metadata column" in _error(capsys, "train", "--records", tmp_path / "rec", "--out",
                                                          tmp_path / "typo", "--meta-columns", "colour")
    assert not (tmp_path / "leak").exists() and not (tmp_path / "typo").exists()


def test_a_balanced_epoch_counts_positives_not_images():
    cfg = Config(oversample=0.2, epoch_positives=2.0)
    # 400 positives among 400,000 images, 1:4, batch 64: 4,000 images an epoch instead of 400,000
    assert train.epoch_steps(cfg, 400_000, 400, 64) == 63
    assert train.epoch_steps(Config(), 400_000, 400, 64) == 6250
    with pytest.raises(KitError, match="epoch_positives: the training folds hold no positives"):
        train.epoch_steps(cfg, 1000, 0, 64)


def test_a_balanced_run_trains_on_the_oversampled_stream_and_scores_by_partial_auc(download, tmp_path):
    records.write_from_source(download, tmp_path / "rec", n_folds=2, size=32, progress=False)
    with pytest.raises(KitError, match="epoch_positives: needs oversample"):
        train.resolve(Config(records=str(tmp_path / "rec"), out=str(tmp_path / "x"), epoch_positives=2.0))
    lines: list[str] = []
    res = train.train_folds(Config(records=str(tmp_path / "rec"), out=str(tmp_path / "run"), model="tiny_cnn",
                                   epochs=2, batch=8, oversample=0.25, epoch_positives=2.0, meta=True, verbose=0,
                                   strategy="cpu"), log=lines.append)
    assert res.metric == "pauc" and all(0.0 <= s <= 0.2 for s in res.scores)
    manifest = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    fold1 = manifest["folds"]["1"]
    steps = -(-2 * fold1["positives"] * 4 // 8)  # fold 0 trains on fold 1: ceil(2 x positives / 0.25 / 8)
    assert f"({fold1['images']} images, {steps} steps of 8)" in next(l for l in lines if l.startswith("fold 0: train"))
    cv = json.loads((tmp_path / "run" / "cv.json").read_text())
    assert set(cv["secondary"]) == {"auc", "top15_sensitivity"}


def test_a_streamed_test_split_serves_the_pixels_ids_and_metadata_its_records_would(tmp_path):
    """Workers decode the images they prepare; those pixels equal the records' JPEG as the pipeline decodes it."""
    from kit.training import pipeline

    dl = synth.make_competition("isic2024", tmp_path / "dl", n_train=40, n_test=130, size=32, seed=5)
    train_manifest = records.write_from_source(dl, tmp_path / "rec", n_folds=2, size=24, progress=False)
    records.write_from_source(dl, tmp_path / "test", size=24, test=True, progress=False)
    stream = records.stream_test_split(dl, train_manifest, workers=2, columns=["age_approx", "sex"])
    assert stream.count == 130 >= records._PARALLEL_MIN_IMAGES  # the worker processes do the work
    cfg = Config(size=24, n_classes=2, augment="none", meta=True, meta_numeric=("age_approx",),
                 meta_categorical={"sex": len(train_manifest.metadata.categorical["sex"])})
    shards = records.list_shards(tmp_path / "test", split="test")
    for view in ("identity", "rot90", 9):  # an exact view and a seeded random one
        direct = list(pipeline.predict_dataset(stream, cfg, view, batch=32))
        via = list(pipeline.predict_dataset(shards, cfg, view, batch=32))
        for key in ("image", "meta"):
            np.testing.assert_array_equal(np.concatenate([b[key] for b in direct]),
                                          np.concatenate([b[key] for b in via]))
    assert pipeline.record_table(stream)["image_name"].tolist() == pipeline.record_table(shards)["image_name"].tolist()
    # one interface for both sources of images: a reader asks the source, never which kind it holds
    files = records.as_images(shards)
    assert type(files) is records.ShardFiles and records.as_images(stream) is stream and records.as_images(files) is files
    assert stream.n_images == files.n_images == records.count_data_items(stream) == records.count_data_items(files) == 130
    assert (stream.manifest.image_size, files.manifest.image_size) == (24, 24)
    assert stream.ids().equals(files.ids())
    assert stream.head(5).n_images == 5 and files.head(5) is files  # shards are read only as far as a reader takes


def test_only_the_source_of_images_tells_a_stream_from_shard_files():
    import re
    from pathlib import Path

    kit_dir = Path(records.__file__).parent
    asking = sorted(p.name for p in kit_dir.glob("*.py") if re.search(r"isinstance\([^)]*ImageStream", p.read_text()))
    assert asking == ["record_readers.py"]  # as_images, the one place that tells them apart


def test_a_stream_carries_the_jpeg_its_record_would_whether_resized_or_passed_through(tmp_path):
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for name, side in (("resized", 40), ("as_is", 24)):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        (tmp_path / f"{name}.jpg").write_bytes(buf.getvalue())
        rows.append((str(tmp_path / f"{name}.jpg"), {"image_name": name}))
    streamed = imaging.make_jpegs(rows, 24)
    recorded = imaging.make_records(rows, 24)
    assert streamed[1][0] == (tmp_path / "as_is.jpg").read_bytes()  # already 24 px: kept byte for byte
    for (jpeg, reason), (example, _), (_, fields) in zip(streamed, recorded, rows):
        assert reason == "" and example == imaging.example_bytes({"image": jpeg, **fields})  # the same image bytes


def test_predict_reads_the_test_hdf5_directly_with_the_same_answers_as_test_records(download, tmp_path, capsys):
    records.write_from_source(download, tmp_path / "rec", n_folds=2, size=32, progress=False)
    records.write_from_source(download, tmp_path / "test", size=32, test=True, progress=False)
    run = tmp_path / "run"
    train.train_folds(Config(records=str(tmp_path / "rec"), out=str(run), model="tiny_cnn", epochs=1, batch=8, meta=True,
                             verbose=0, strategy="cpu"), log=lambda _: None)
    sample = download / "sample_submission.csv"
    for name, source in (("via_records.csv", tmp_path / "test"), ("direct.csv", download)):
        assert main(["predict", "--run", str(run), "--records", str(source), "--sample-submission", str(sample),
                     "--out", str(tmp_path / name)]) == 0
    via, direct = (pd.read_csv(tmp_path / n, dtype={"isic_id": str}) for n in ("via_records.csv", "direct.csv"))
    assert direct["isic_id"].tolist() == pd.read_csv(sample, dtype=str)["isic_id"].tolist()
    np.testing.assert_array_equal(direct["target"].to_numpy(), via["target"].to_numpy())

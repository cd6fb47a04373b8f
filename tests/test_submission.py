"""Submission CSVs: exact ids, fast reading and writing, make_submission, and `kit check` per defect."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kit.cli.app import main
from kit.core.errors import KitError
from kit.ensemble.submission import (
    check_submission,
    format_floats,
    make_submission,
    read_submission,
    read_table,
    write_submission,
    write_table,
)

IDS = [f"ISIC_{i:07d}" for i in (52060, 15719, 52349, 58510, 73313, 1, 2, 3)]


def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def sample(tmp_path):
    rows = "".join(f"{i},0\n" for i in IDS)
    return _write(tmp_path / "sample_submission.csv", "image_name,target\n" + rows)


@pytest.fixture
def good(tmp_path):
    rows = "".join(f"{i},{(k + 1) / 10}\n" for k, i in enumerate(IDS))
    return _write(tmp_path / "sub.csv", "image_name,target\n" + rows)


@pytest.fixture
def ham_sample(tmp_path):
    cols = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    rows = "".join(f"ISIC_{i:07d}," + ",".join(["0"] * 7) + "\n" for i in range(5))
    return _write(tmp_path / "ham_sample.csv", "image_id," + ",".join(cols) + "\n" + rows)


# --- reading keeps ids exactly ---------------------------------------------------------------------


def test_ids_are_kept_exactly_as_written(tmp_path):
    ids = ["0001", "f38a6374c348f90b587e046aac6079959adf3835", "ISIC_0052060", "00e1", "1e5", "NA", "007"]
    path = _write(tmp_path / "a.csv", "id,label\n" + "".join(f"{i},0.5\n" for i in ids))
    frame = read_submission(path)
    assert frame["id"].tolist() == ids
    assert frame["label"].tolist() == [0.5] * len(ids)


def test_fast_and_careful_reads_agree(tmp_path):
    # A quoted field sends the file through the careful pandas read; the values must not change.
    plain = _write(tmp_path / "plain.csv", "id,a,b\nx1,0.25,0.75\nx22,1e-05,0.99999\nx333,0,1\n")
    quoted = _write(tmp_path / "quoted.csv", 'id,a,b\n"x1",0.25,0.75\nx22,1e-05,0.99999\nx333,0,1\n')
    a, b = read_table(plain), read_table(quoted)
    assert a.ids.tolist() == b.ids.tolist() == [b"x1", b"x22", b"x333"]
    np.testing.assert_array_equal(a.values, b.values)


def test_trailing_comma_on_every_row(tmp_path):
    path = _write(tmp_path / "a.csv", "id,label\n0001,0.5,\n00ab,0.25,\n")
    with pytest.raises(KitError) as exc:
        read_submission(path)
    assert str(exc.value) == f"{path}: 2 rows with 3 fields, the header has 2 (a comma at the end of the row?): lines 2, 3"


def test_header_and_blank_lines_only(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"image_name,target\n\n\r\n")
    t = read_table(path)
    assert (len(t), t.columns, t.values.shape) == (0, ["image_name", "target"], (0, 1))


def test_crlf_blank_lines_and_missing_final_newline(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"image_name,target\r\nISIC_1,0.1\r\n\r\nISIC_22,0.2\r\nISIC_333,0.3")
    t = read_table(path)
    assert t.ids.tolist() == [b"ISIC_1", b"ISIC_22", b"ISIC_333"]
    assert t.values[:, 0].tolist() == [0.1, 0.2, 0.3]


def test_long_ids_of_many_lengths(tmp_path):
    ids = ["a" * k + str(k) for k in range(1, 40)]
    path = _write(tmp_path / "a.csv", "id,p\n" + "".join(f"{i},{k / 100}\n" for k, i in enumerate(ids)))
    assert read_submission(path)["id"].tolist() == ids


def test_write_table_round_trip_and_float_text(tmp_path):
    ids = np.array([b"0001", b"ISIC_0052060", b"f38a6374c3"])
    values = np.array([[0.5, 0.25], [1e-7, 0.0], [1.0, 0.123456789012345]])
    out = write_table(tmp_path / "out.csv", ["id", "a", "b"], ids, values)
    assert out.read_text().splitlines() == [
        "id,a,b", "0001,0.5,0.25", "ISIC_0052060,1e-07,0", "f38a6374c3,1,0.123456789012",
    ]


def test_predict_and_blend_write_numbers_the_same_way(tmp_path):
    """kit predict's writer (a frame) and kit blend's (ids + values) give the same bytes for the same numbers."""
    ids = ["0001", "ISIC_0052060", "lésion 7"]
    values = np.array([[1 / 3, 0.25], [1e-7, 0.0], [1.0, 0.123456789012345]])
    frame = pd.DataFrame({"image_name": ids, "a": values[:, 0], "b": values[:, 1]})
    predicted = write_submission(frame, tmp_path / "predict.csv")
    blended = write_table(tmp_path / "blend.csv", ["image_name", "a", "b"], np.array([i.encode() for i in ids]), values)
    assert predicted.read_bytes() == blended.read_bytes()
    assert predicted.read_text(encoding="utf-8").splitlines()[1] == "0001,0.333333333333,0.25"


def test_format_floats_matches_printf():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.random(20000), rng.random(200) * 1e-3, [0.0, 1.0, 1e-4, 0.1, 9.9999999999999e-5, 2.5, -1.0]])
    text = format_floats(v)
    expected = np.array([("%.12g" % x).encode() for x in v])
    # The vectorised path may round the 12th digit the other way next to a half: rare, and tiny.
    assert (text != expected).mean() < 1e-3
    np.testing.assert_allclose(text.astype(float), v, rtol=1e-11, atol=0)


# --- make_submission ---------------------------------------------------------------------------------


def test_make_submission_binary_copies_sample_ids_order_and_columns():
    sample = pd.DataFrame({"id": ["00ab", "0001", "ff"], "label": [0, 0, 0]})
    sub = make_submission(["0001", "ff", "00ab"], np.array([[0.1], [0.2], [0.3]]), ["0", "1"], sample, "id")
    assert list(sub.columns) == ["id", "label"]
    assert sub["id"].tolist() == ["00ab", "0001", "ff"]
    assert sub["label"].tolist() == [0.3, 0.1, 0.2]


def test_make_submission_multiclass_matches_columns_by_class_name():
    sample = pd.DataFrame({"image_id": ["b", "a"], "nv": [0, 0], "mel": [0, 0], "bcc": [0, 0]})
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])  # classes bcc, mel, nv
    sub = make_submission(["a", "b"], probs, ["bcc", "mel", "nv"], sample, "image_id")
    assert list(sub.columns) == ["image_id", "nv", "mel", "bcc"]
    assert sub.values.tolist() == [["b", 0.2, 0.3, 0.5], ["a", 0.7, 0.2, 0.1]]


def test_make_submission_without_sample():
    sub = make_submission(["x", "y"], np.array([0.25, 0.75]), ["benign", "malignant"], None, "image_name")
    assert list(sub.columns) == ["image_name", "target"]
    multi = make_submission(["x"], np.array([[0.2, 0.8, 0.0]]), ["a b", "c", "d"], None, "id")
    assert list(multi.columns) == ["id", "a b", "c", "d"]


def test_make_submission_refuses_missing_ids():
    sample = pd.DataFrame({"id": ["a", "b"], "label": [0, 0]})
    with pytest.raises(KitError, match=r"sample submission: 1 id has no prediction, e.g. b"):
        make_submission(["a"], np.array([0.5]), ["0", "1"], sample, "id")


# --- kit check: one planted defect per test ----------------------------------------------------------


def _check(path, sample_path, capsys):
    code = main(["check", str(path), "--sample-submission", str(sample_path)])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out.strip()


def test_check_accepts_a_good_submission(good, sample, capsys):
    assert check_submission(good, sample) == []
    code, err, out = _check(good, sample, capsys)
    assert (code, err, out) == (0, [], f"{good}: OK")


def test_check_accepts_reordered_rows(tmp_path, sample):
    rows = "".join(f"{i},0.5\n" for i in reversed(IDS))
    path = _write(tmp_path / "rev.csv", "image_name,target\n" + rows)
    assert check_submission(path, sample) == []


def _planted(tmp_path, lines):
    return _write(tmp_path / "bad.csv", "\n".join(lines) + "\n")


def _rows(values=None, ids=IDS):
    values = values or [str((k + 1) / 10) for k in range(len(ids))]
    return [f"{i},{v}" for i, v in zip(ids, values)]


def test_check_missing_row(tmp_path, sample, capsys):
    path = _planted(tmp_path, ["image_name,target"] + _rows()[:-1])
    code, err, _ = _check(path, sample, capsys)
    assert code == 1
    assert err == [
        f"{path}: 7 rows; {sample} has 8 (e.g. 'ISIC_0000003' is missing)",
        f"{path}: 1 id of {sample} missing, e.g. 'ISIC_0000003'",
    ]


def test_check_foreign_id(tmp_path, sample, capsys):
    rows = _rows()
    rows[2] = "ISIC_9999999,0.3"
    path = _planted(tmp_path, ["image_name,target"] + rows)
    code, err, _ = _check(path, sample, capsys)
    assert code == 1
    assert err == [
        f"{path}: 1 id not in {sample}, e.g. 'ISIC_9999999' (row 3)",
        f"{path}: 1 id of {sample} missing, e.g. 'ISIC_0052349'",
    ]


def test_check_duplicate_id(tmp_path, sample, capsys):
    path = _planted(tmp_path, ["image_name,target"] + _rows() + ["ISIC_0015719,0.9"])
    code, err, _ = _check(path, sample, capsys)
    assert code == 1
    assert err == [
        f"{path}: 9 rows; {sample} has 8 (e.g. 'ISIC_0015719' is extra)",
        f"{path}: 1 duplicate id, e.g. 'ISIC_0015719' (rows 2 and 9)",
    ]


def test_check_nan(tmp_path, sample, capsys):
    values = [str((k + 1) / 10) for k in range(8)]
    values[4] = ""
    code, err, _ = _check(_planted(tmp_path, ["image_name,target"] + _rows(values)), sample, capsys)
    assert (code, err) == (1, [f"{tmp_path / 'bad.csv'}: 1 NaN value, e.g. 'ISIC_0073313' target"])


def test_check_infinity(tmp_path, sample, capsys):
    values = [str((k + 1) / 10) for k in range(8)]
    values[1] = "inf"
    code, err, _ = _check(_planted(tmp_path, ["image_name,target"] + _rows(values)), sample, capsys)
    assert (code, err) == (1, [f"{tmp_path / 'bad.csv'}: 1 infinite value, e.g. 'ISIC_0015719' target"])


def test_check_probability_outside_unit_interval(tmp_path, sample, capsys):
    values = [str((k + 1) / 10) for k in range(8)]
    values[5], values[6] = "1.5", "-0.2"
    code, err, _ = _check(_planted(tmp_path, ["image_name,target"] + _rows(values)), sample, capsys)
    assert (code, err) == (1, [f"{tmp_path / 'bad.csv'}: 2 probabilities outside [0, 1], e.g. 'ISIC_0000001' target=1.5"])


def test_check_text_in_number_column(tmp_path, sample, capsys):
    values = [str((k + 1) / 10) for k in range(8)]
    values[3] = "high"
    code, err, _ = _check(_planted(tmp_path, ["image_name,target"] + _rows(values)), sample, capsys)
    assert (code, err) == (1, [f"{tmp_path / 'bad.csv'}: 1 value not a number, e.g. 'ISIC_0058510' target='high'"])


def test_check_wrong_column_name(tmp_path, sample, capsys):
    path = _planted(tmp_path, ["image_name,pred"] + _rows())
    code, err, _ = _check(path, sample, capsys)
    assert (code, err) == (1, [f"{path}: columns are image_name,pred; {sample} has image_name,target"])


def test_check_wrong_column_order(tmp_path, sample, capsys):
    path = _planted(tmp_path, ["target,image_name"] + [f"{k / 10},{i}" for k, i in enumerate(IDS)])
    code, err, _ = _check(path, sample, capsys)
    assert code == 1
    assert err[0] == f"{path}: columns are target,image_name; {sample} has image_name,target"


def test_check_multiclass_rows_must_sum_to_one(tmp_path, ham_sample, capsys):
    head = "image_id,akiec,bcc,bkl,df,mel,nv,vasc"
    rows = [f"ISIC_{i:07d},0.1,0.1,0.1,0.1,0.1,0.1,0.4" for i in range(5)]
    rows[3] = "ISIC_0000003,0.1,0.1,0.1,0.1,0.1,0.1,0.1"
    path = _planted(tmp_path, [head] + rows)
    code, err, _ = _check(path, ham_sample, capsys)
    assert (code, err) == (1, [f"{path}: 1 row does not sum to 1, e.g. 'ISIC_0000003' sums to 0.7"])


def test_check_empty_file(tmp_path, sample, capsys):
    path = _write(tmp_path / "empty.csv", "")
    assert _check(path, sample, capsys)[:2] == (1, [f"{path}: empty file"])


def test_check_not_a_csv(tmp_path, sample, capsys):
    path = tmp_path / "model.csv"
    path.write_bytes(b"PK\x03\x04\x00\x00binary zip bytes\xff\xfe")
    assert _check(path, sample, capsys)[:2] == (1, [f"{path}: not a CSV file (binary data)"])


def test_check_ragged_row(tmp_path, sample, capsys):
    rows = _rows()
    rows[1] = "ISIC_0015719,0.2,0.9"
    path = _planted(tmp_path, ["image_name,target"] + rows)
    assert _check(path, sample, capsys)[:2] == (1, [f"{path}: line 3 has 3 fields, the header has 2"])


def test_check_lists_every_problem(tmp_path, sample):
    values = [str((k + 1) / 10) for k in range(8)]
    values[0], values[1] = "nan", "2"
    rows = _rows(values)[:-1] + ["ISIC_0000001,0.5"]
    problems = check_submission(_planted(tmp_path, ["image_name,target"] + rows), sample)
    assert len(problems) == 4  # duplicate, missing id, NaN, outside [0, 1]
    assert [p.split(": ", 1)[1].split(",")[0] for p in problems] == [
        "1 duplicate id", f"1 id of {sample} missing", "1 NaN value", "1 probability outside [0"
    ]


def test_plain_numbers_read_as_pandas_reads_them_and_the_rest_goes_to_pandas(tmp_path):
    # numpy converts plain decimals (no pandas import); its values must be pandas' to the last bit
    rng = np.random.default_rng(7)
    v = rng.random(3000) * np.where(rng.random(3000) < 0.3, 1e-5, 1.0)
    texts = [repr(float(x)) for x in v[:1000]] + [f"{x:.6f}" for x in v[1000:2000]] + [f"{x:.15e}" for x in v[2000:]]
    texts[:8] = ["0", "1", "5.", ".5", "-0.25", "+0.75", "1E-3", "7e+2"]
    ids = [f"ISIC_{i:07d}" for i in range(len(texts))]
    path = _write(tmp_path / "plain.csv", "image_name,a,b\n" + "".join(
        f"{i},{t},{texts[-1 - k]}\n" for k, (i, t) in enumerate(zip(ids, texts))))
    expected = pd.read_csv(path, usecols=[1, 2], dtype=np.float64).to_numpy()
    np.testing.assert_array_equal(read_table(path).values, expected)
    # NaN, an empty cell, a space: pandas' C parser, as before; a digit separator is text, not 10
    nan = _write(tmp_path / "nan.csv", "image_name,target\nISIC_0000001,NaN\nISIC_0000002,\nISIC_0000003, 0.5\n")
    np.testing.assert_array_equal(read_table(nan).values[:, 0], [np.nan, np.nan, 0.5])
    with pytest.raises(KitError, match=r"column target holds text that is not a number, e.g. id ISIC_0000001: '1_0'"):
        read_table(_write(tmp_path / "sep.csv", "image_name,target\nISIC_0000001,1_0\n"))


def test_check_and_blend_do_not_import_tensorflow(tmp_path, good, sample):
    code = (
        "import sys\n"
        "from kit.cli.app import main\n"
        f"assert main(['check', {str(good)!r}, '--sample-submission', {str(sample)!r}]) == 0\n"
        f"assert main(['blend', {str(good)!r}, {str(sample)!r}, '--out', {str(tmp_path / 'b.csv')!r}]) == 0\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'jax', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"

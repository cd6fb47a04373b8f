"""kit stack: per-group features against pandas, the train-only guard, the stack's quality on a competition whose
signal is partly in the metadata and partly visible only relative to the patient, its run folder, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stack_fixture as sf
from kit.ensemble import blend, stack
from kit.core import metrics
from kit.data import records, synth
from kit.cli.app import main
from kit.core.errors import KitError

FAST = ["--rounds", "400", "--early-stopping", "40", "--threads", "1"]


# --- per-group features ------------------------------------------------------------------------------


def _pandas_group_features(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """The straightforward pandas way, the reference kit's features must equal."""
    df = pd.DataFrame(values).assign(g=group)
    cols = [df.groupby("g")["g"].transform("size").to_numpy(np.float64)]
    for j in range(values.shape[1]):
        g = df.groupby("g")[j]
        mean, std = g.transform("mean"), g.transform("std", ddof=0)
        z = ((df[j] - mean) / std).where(std > 0, 0.0).where(df[j].notna())
        ratio = (df[j] / mean).where(mean != 0)
        cols += [z.to_numpy(), ratio.to_numpy(), g.rank(pct=True).to_numpy()]
    return np.column_stack(cols)


def test_group_features_equal_pandas_with_missing_values_ties_and_single_rows():
    rng = np.random.default_rng(0)
    n = 3000
    group = np.array([f"IP_{k:04d}" for k in rng.integers(0, 400, n)])
    values = np.column_stack([rng.normal(size=n), np.round(rng.random(n), 1), rng.integers(20, 80, n) / 1.0])
    values[rng.random(n) < 0.1, 0] = np.nan
    group[:3] = ["alone_a", "alone_b", "alone_c"]  # groups of one image
    got, names = stack.group_features(values, group, ["a", "b", "c"])
    assert names[:4] == ["group_size", "a__z", "a__ratio", "a__rank"] and len(names) == 10
    np.testing.assert_allclose(got, _pandas_group_features(values, group), rtol=1e-9, atol=1e-12)
    assert got[0, 0] == 1 and got[0, 3] == 1.0  # alone in its group: size 1, rank 1
    assert got[0, 1] == 0.0 or np.isnan(values[0, 0])  # and never unusual
    # a lesion unlike the patient's others stands out: [1, 1, 1, 5] -> its z-score is sqrt(3)
    z = stack.group_features(np.array([[1.0], [1.0], [1.0], [5.0]]), np.array(["p"] * 4), ["x"])[0]
    np.testing.assert_allclose(z[:, 1], [-1 / np.sqrt(3)] * 3 + [np.sqrt(3)])
    np.testing.assert_allclose(z[:, 2], [0.5, 0.5, 0.5, 2.5])
    np.testing.assert_allclose(z[:, 3], [0.5, 0.5, 0.5, 1.0])


def test_group_features_above_65536_groups_rank_as_pandas():
    rng = np.random.default_rng(1)
    n = 150_000
    group = rng.integers(0, 70_000, n)
    values = rng.normal(size=(n, 1))
    got, _ = stack.group_features(values, group, ["v"])
    want = pd.Series(values[:, 0]).groupby(group).rank(pct=True).to_numpy()
    np.testing.assert_allclose(got[:, 3], want, rtol=1e-12)


def test_train_only_columns_are_named():
    train = records.MetadataColumns(("age", "tbp_lv_H", "biopsy"), {"sex": (), "lesion_id": ()})
    test = records.MetadataColumns(("age", "tbp_lv_H"), {"sex": ()})
    assert stack.train_only_columns(train, test) == ["biopsy", "lesion_id"]
    assert stack.train_only_columns(test, test) == []


def test_undersample_keeps_every_positive_and_the_ratio():
    y = np.array([0] * 900 + [1] * 30)
    rows = stack.undersample(y, 5.0, np.random.default_rng(0))
    assert (y[rows] == 1).sum() == 30 and (y[rows] == 0).sum() == 150
    assert np.array_equal(rows, np.sort(rows))
    assert np.array_equal(stack.undersample(y, 0.0, np.random.default_rng(0)), np.arange(930))


# --- a synthetic competition -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def comp(tmp_path_factory):
    """Records (with and without a planted train-only column), test records, two image runs and their submissions."""
    root = tmp_path_factory.mktemp("stack")
    download = root / "siim"
    sf.write_siim_records(download, root / "rec_leak", leak=True)
    sf.write_siim_records(download, root / "rec", leak=False)
    sf.write_siim_records(download, root / "rec_test", test=True)
    train, _ = records.read_metadata(root / "rec")
    test, _ = records.read_metadata(root / "rec_test")
    y, g = train["target"].to_numpy(), train["group"].to_numpy()
    preds = {"b0": sf.image_preds(y, g, strength=1.6, patient=1.2, noise=0.8, seed=1),
             "b3": sf.image_preds(y, g, strength=1.3, patient=1.2, noise=0.9, seed=2)}
    runs, subs = [], []
    for k, (name, p) in enumerate(preds.items()):
        runs.append(sf.write_run(root / name, train, p))
        tp = sf.image_preds(np.zeros(len(test), int), test["group"].to_numpy(), strength=1.6, patient=1.2,
                            noise=0.8, seed=10 + k)
        subs.append(sf.write_submission(root / f"{name}.csv", test["image_name"], tp, ["image_name", "target"],
                                        run=runs[-1]))
    return {"root": root, "train": train, "test": test, "runs": runs, "subs": subs,
            "sample": download / "sample_submission.csv"}


def _stack_cli(capsys, *argv) -> tuple[int, list[str], list[str]]:
    code = main(["stack", *map(str, argv)])
    cap = capsys.readouterr()
    return code, cap.out.strip().splitlines(), cap.err.strip().splitlines()


@pytest.fixture(scope="module")
def stacked(comp):
    """The stack on the records with the planted column, through the CLI's own code path."""
    out = comp["root"] / "stack_leak"
    lines: list[str] = []
    args = ["--records", comp["root"] / "rec_leak", "--runs", *comp["runs"], "--out", out,
            "--test-records", comp["root"] / "rec_test", "--predictions", *comp["subs"],
            "--sample-submission", comp["sample"], "--submission", comp["root"] / "stack_sub.csv", *FAST]
    from kit.cli.app import build_parser, stack_config

    res = stack.stack(stack_config(build_parser().parse_args(["stack", *map(str, args)])), log=lines.append)
    return res, lines


def test_stack_beats_image_runs_their_rank_blend_and_metadata_alone(comp, stacked):
    res, lines = stacked
    y = comp["train"]["target"].to_numpy()
    image = [json.loads((r / "cv.json").read_text())["overall"] for r in comp["runs"]]
    rank = blend.fit_weights(comp["runs"], method="rank")
    meta = stack.stack(stack.StackConfig(records=str(comp["root"] / "rec"), out=str(comp["root"] / "meta"),
                                         test_records=str(comp["root"] / "rec_test"), group_features=False,
                                         rounds=400, early_stopping=40, threads=1), log=lambda _: None)
    assert res.metric == "auc"
    assert metrics.auc(y, res.oof["pred"]) == pytest.approx(res.scores[-1])
    # measured: image runs 0.801 and 0.751, rank blend 0.805, metadata alone 0.74, the stack 0.957
    assert res.scores[-1] > max(image) + 0.1
    assert res.scores[-1] > max(rank.blend_pooled, rank.blend_score) + 0.1
    assert res.scores[-1] > meta.scores[-1] + 0.15
    assert 0.65 < meta.scores[-1] < 0.85  # age and site carry signal of their own
    assert "runs" not in meta.features and not any("__" in f for f in meta.features)
    # the patient-relative features are what the trees lean on
    feats = pd.read_csv(res.run / "features.csv")
    top = feats.nlargest(3, "importance_lightgbm")
    assert (top["source"] == "group").sum() >= 2, top
    assert lines[0] == "train-only columns, never features: biopsy_result"
    assert [ln.split(":")[0] for ln in lines if ln.startswith("lightgbm fold")] == [f"lightgbm fold {k}" for k in range(5)]


def test_planted_train_only_column_is_never_used(comp, stacked, capsys):
    res, _ = stacked
    assert "biopsy_result" not in res.features
    out = comp["root"] / "stack_clean"
    code, lines, err = _stack_cli(capsys, "--records", comp["root"] / "rec", "--runs", *comp["runs"], "--out", out,
                                  "--test-records", comp["root"] / "rec_test", "--predictions", *comp["subs"],
                                  "--sample-submission", comp["sample"], *FAST)
    assert code == 0, err
    assert lines[-1].startswith(f"{out}: oof.csv, cv.json")
    # same features, same folds, same seed: the same stack, byte for byte (deterministic)
    assert (out / "oof.csv").read_bytes() == (res.run / "oof.csv").read_bytes()
    assert (out / "submission.csv").read_bytes() == (res.run / "submission.csv").read_bytes()
    assert json.loads((out / "cv.json").read_text())["overall"] == res.scores[-1]


def test_stack_run_folder_is_a_run_kit_blend_and_check_read(comp, stacked, capsys):
    res, _ = stacked
    run = res.run
    oof = pd.read_csv(run / "oof.csv")
    assert list(oof.columns) == ["image_name", "target", "pred", "fold"]
    assert oof["image_name"].tolist() == comp["train"]["image_name"].tolist()
    assert np.array_equal(oof["fold"], comp["train"]["fold"])
    cv = json.loads((run / "cv.json").read_text())
    assert set(cv) >= {"metric", "folds", "overall", "fold_mean", "fold_std"} and len(cv["folds"]) == 5
    assert cv["fold_mean"] == pytest.approx(np.mean(list(cv["folds"].values())))
    done = [json.loads((run / f"fold{k}" / "done.json").read_text()) for k in range(5)]
    assert [d["fold"] for d in done] == list(range(5))
    assert [d["score"] for d in done] == list(cv["folds"].values())
    assert all(1 <= d["trees"]["lightgbm"] <= 400 for d in done)  # early stopping chose each fold's count
    feats = pd.read_csv(run / "features.csv")
    assert set(feats["feature"]) == set(res.features)
    assert {"b0_pred", "b0_pred__z", "b0_pred__ratio", "b0_pred__rank", "group_size", "age_approx", "sex",
            "anatom_site_general_challenge"} <= set(feats["feature"])
    assert "age_approx__z" not in set(feats["feature"])  # age repeats within a patient: a constant z-score
    assert feats["importance_lightgbm"].sum() == pytest.approx(1.0)
    assert (run / "plots" / "importance.png").stat().st_size > 1000
    assert 'models = [\n    "lightgbm",\n]' in (run / "config.toml").read_text()
    sub = pd.read_csv(run / "submission.csv")
    sample = pd.read_csv(comp["sample"])
    assert sub["image_name"].tolist() == sample["image_name"].tolist()
    assert (comp["root"] / "stack_sub.csv").read_bytes() == (run / "submission.csv").read_bytes()
    # one model kind: its own run folder holds the same predictions as the stack's
    assert (run / "models" / "lightgbm" / "submission.csv").read_bytes() == (run / "submission.csv").read_bytes()
    assert (run / "models" / "lightgbm" / "oof.csv").read_bytes() == (run / "oof.csv").read_bytes()
    assert main(["check", str(run / "submission.csv"), "--sample-submission", str(comp["sample"])]) == 0
    assert json.loads((run / "submission.json").read_text())["run"] == str(run)  # its sidecar: kit blend pairs by it
    out = comp["root"] / "blend.csv"
    code = main(["blend", str(run / "submission.csv"), str(comp["subs"][0]), "--oof", str(comp["runs"][0]), str(run),
                 "--fit", "--out", str(out)])
    assert code == 0
    assert "/stack_leak " in capsys.readouterr().out
    assert main(["runs", str(run), "--json"]) == 0  # kit runs lists it as a stack of LightGBM
    row = json.loads(capsys.readouterr().out)[0]
    assert row["model"] == "stack (lightgbm)" and row["state"] == "finished" and row["metric"] == "auc"


def test_several_model_kinds_blend_with_weights_fit_on_oof(comp):
    pytest.importorskip("xgboost")
    pytest.importorskip("catboost")
    res = stack.stack(stack.StackConfig(records=str(comp["root"] / "rec"), runs=tuple(map(str, comp["runs"])),
                                        out=str(comp["root"] / "kinds"), models=("lightgbm,catboost", "xgboost"), rounds=200,
                                        early_stopping=20, learning_rate=0.1, threads=1, undersample=3.0, seeds=2),
                      log=lambda _: None)
    assert set(res.models) == {"lightgbm", "catboost", "xgboost"}
    assert sum(res.weights.values()) == pytest.approx(1.0)
    assert all(s > 0.9 for s in res.models.values()), res.models
    # weights fit by ensemble selection never fall below the best member on its own objective
    assert res.scores[-1] > max(res.models.values()) - 0.01
    feats = pd.read_csv(res.run / "features.csv")
    assert {"importance_lightgbm", "importance_catboost", "importance_xgboost"} <= set(feats.columns)
    for k in res.models:
        assert json.loads((res.run / "models" / k / "cv.json").read_text())["overall"] == res.models[k]
    # the weights fit on the kinds' predictions in memory are those fit on their folders read back
    again = blend.fit_weights([res.run / "models" / k for k in res.models], method="mean")
    assert dict(zip(res.models, again.weights)) == res.weights


def test_multi_class_ham10000_stack(tmp_path):
    download = synth.make_competition("ham10000", tmp_path / "ham", n_train=280, size=16, seed=2)
    records.write_from_source(download, tmp_path / "rec", n_folds=4, size=8, progress=False, workers=1)
    train, manifest = records.read_metadata(tmp_path / "rec")
    classes = list(manifest.classes)
    y = train["target"].to_numpy()
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.0, (len(y), len(classes)))
    logits[np.arange(len(y)), y] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    run = sf.write_run(tmp_path / "run", train, p, classes=classes, metric="balanced_accuracy")
    res = stack.stack(stack.StackConfig(records=str(tmp_path / "rec"), runs=(str(run),), out=str(tmp_path / "st"),
                                        rounds=200, early_stopping=20, learning_rate=0.1, threads=1),
                      log=lambda _: None)
    assert res.metric == "balanced_accuracy"
    oof = pd.read_csv(tmp_path / "st" / "oof.csv")
    assert list(oof.columns) == ["image_name", "target", *[f"pred_{c}" for c in classes], "fold"]
    np.testing.assert_allclose(oof[[f"pred_{c}" for c in classes]].sum(1), 1.0, rtol=1e-9)
    assert res.scores[-1] == pytest.approx(metrics.balanced_accuracy(y, oof[[f"pred_{c}" for c in classes]].to_numpy()))
    assert res.scores[-1] > 0.4  # the image run's argmax alone: about 0.5, chance 1/7
    assert "run_pred_mel__z" in res.features


# --- bad input: one line, exit 1, nothing written -------------------------------------------------------


def _bad_run(comp, name: str, **kw) -> Path:
    train = comp["train"].copy()
    preds = np.asarray(kw.pop("preds", np.linspace(0.1, 0.9, len(train))))
    if "drop_rows" in kw:
        keep = np.ones(len(train), bool)
        keep[: kw.pop("drop_rows")] = False
        train, preds = train[keep], preds[keep]
    if kw.pop("shift_folds", False):
        train["fold"] = (train["fold"] + 1) % 5
    return sf.write_run(comp["root"] / name, train, preds, **kw)


@pytest.mark.parametrize("case, needle", [
    ("no_fold", "no fold column"),
    ("other_folds", "folds differ from the records'"),
    ("missing_ids", "7 ids of"),
    ("test_not_covered", "no prediction for 5 of the"),
    ("constant", "is constant in the training records"),
    ("test_all_missing", "every test value is missing"),
    ("not_installed", "is not installed"),
])
def test_bad_input_is_one_line_and_nothing_is_written(comp, capsys, monkeypatch, case, needle):
    root = comp["root"]
    runs, subs, test_records = list(comp["runs"]), list(comp["subs"]), root / "rec_test"
    extra: list[str] = []
    if case == "no_fold":
        runs[0] = _bad_run(comp, "nofold", fold_column=False)
    elif case == "other_folds":
        runs[0] = _bad_run(comp, "shifted", shift_folds=True)
    elif case == "missing_ids":
        runs[0] = _bad_run(comp, "partial", drop_rows=7)
    elif case == "test_not_covered":
        t = comp["test"].iloc[5:]
        subs[0] = sf.write_submission(root / "short.csv", t["image_name"], np.full(len(t), 0.5), ["image_name", "target"])
    elif case == "constant":
        runs[0] = _bad_run(comp, "flat", preds=np.full(len(comp["train"]), 0.5))
    elif case == "test_all_missing":
        test_records = root / "rec_test_blank"
        if not test_records.exists():
            sf.write_siim_records(root / "siim", test_records, test=True, blank_test="age_approx")
    elif case == "not_installed":
        monkeypatch.setattr(stack, "installed", lambda kind: kind == "lightgbm")
        extra = ["--models", "lightgbm,xgboost"]
    out = root / f"bad_{case}"
    code, lines, err = _stack_cli(capsys, "--records", root / "rec", "--runs", *runs, "--out", out,
                                  "--test-records", test_records, "--predictions", *subs, *FAST, *extra)
    assert code == 1
    assert len(err) == 1 and err[0].startswith("kit stack: error: ") and needle in err[0], err
    assert not out.exists() and not list(root.glob(f".bad_{case}*"))


def test_missing_ids_name_an_id(comp):
    run = comp["root"] / "partial_ids"
    if not run.exists():
        _bad_run(comp, "partial_ids", drop_rows=7)
    with pytest.raises(KitError, match=r"oof\.csv.*(7 ids|ISIC_).*was the run trained on"):
        stack.stack(stack.StackConfig(records=str(comp["root"] / "rec"), runs=(str(run),),
                                      out=str(comp["root"] / "x")), log=lambda _: None)


def test_all_installed_kinds_skip_the_missing_with_a_line(monkeypatch):
    monkeypatch.setattr(stack, "installed", lambda kind: kind == "lightgbm")
    lines: list[str] = []
    assert stack.resolve_models(["all"], lines.append) == ["lightgbm"]
    assert lines == ["catboost: not installed, skipped (pip install 'kit[trees]')",
                     "xgboost: not installed, skipped (pip install 'kit[trees]')"]
    with pytest.raises(KitError, match="unknown model kind 'forest'"):
        stack.resolve_models(["forest"])


def test_documented_stack_commands_parse_with_kit_stack_flags():
    import re
    import shlex

    from kit.cli.app import build_parser, stack_config

    text = (Path(__file__).resolve().parents[1] / "docs" / "stacking.md").read_text()
    section = text.split("## The second stage: `kit stack`", 1)[1].split("\n## ", 1)[0]
    commands = [re.sub(r"\\\n\s*", " ", block) for block in re.findall(r"```(?:bash|text)\n(.*?)```", section, re.S)]
    lines = [ln.split("  #")[0].strip() for block in commands for ln in block.splitlines() if ln.startswith("kit stack")]
    assert len(lines) == 2  # SIIM-ISIC 2020 and ISIC 2024
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])
        cfg = stack_config(args)
        cfg.check()
        assert cfg.runs and len(cfg.predictions) == len(cfg.runs)


def test_isic2024_stack_reads_the_test_download_and_scores_partial_auc(tmp_path, capsys):
    download = synth.make_competition("isic2024", tmp_path / "isic2024", n_train=600, n_test=40, size=16, seed=4)
    manifest = records.write_from_source(download, tmp_path / "rec", n_folds=5, size=8, progress=False, workers=1)
    train, _ = records.read_metadata(tmp_path / "rec")
    test, test_manifest = records.read_metadata(download, "test", train_manifest=manifest)
    assert len(test) == 40 and (test["fold"] == -1).all() and test_manifest.split == "test"
    y, g = train["target"].to_numpy(), train["group"].to_numpy()
    run = sf.write_run(tmp_path / "b0", train, sf.image_preds(y, g, strength=1.5, patient=1.0, noise=0.8, seed=1),
                       metric="pauc")
    sub = sf.write_submission(tmp_path / "b0.csv", test["image_name"], np.full(len(test), 0.2), ["isic_id", "target"])
    out = tmp_path / "stack"
    code, lines, err = _stack_cli(capsys, "--records", tmp_path / "rec", "--runs", run, "--out", out,
                                  "--test-records", download, "--predictions", sub,
                                  "--sample-submission", download / "sample_submission.csv",
                                  "--undersample", "4", "--seeds", "2", "--drop", "image_type", *FAST)
    assert code == 0, err  # image_type is "TBP tile: close-up" on every row, as in the real download
    cv = json.loads((out / "cv.json").read_text())
    image = json.loads((run / "cv.json").read_text())["overall"]
    assert cv["metric"] == "pauc" and 0 <= cv["overall"] <= 0.2
    # measured: the image run 0.089, the stack 0.197 of 0.2 (the "ugly duckling" colour, relative to the patient)
    assert cv["overall"] > image + 0.03, (cv["overall"], image)
    feats = set(pd.read_csv(out / "features.csv")["feature"])
    assert "tbp_lv_color_std_mean__z" in feats and "b0_pred__rank" in feats
    assert not feats & {"iddx_full", "mel_thick_mm", "tbp_lv_dnn_lesion_confidence", "lesion_id", "target"}
    assert main(["check", str(out / "submission.csv"), "--sample-submission",
                 str(download / "sample_submission.csv")]) == 0


# --- hostile flags and inputs: one line before any file is read or anything is written -----------------------


@pytest.mark.parametrize("flag, value, line", [
    ("--seed", "-1", "seed: expects in [0, 2**31), got -1"),
    ("--seeds", "0", "seeds: expects at least 1, got 0"),
    ("--rounds", "0", "rounds: expects at least 1, got 0"),
    ("--early-stopping", "-5", "early_stopping: expects at least 1, got -5"),
    ("--learning-rate", "nan", "learning_rate: expects in (0, 1], got nan"),
    ("--undersample", "0.5", "undersample: expects 0 (keep every row) or a finite ratio >= 1, got 0.5"),
    ("--threads", "-2", "threads: expects >= 0 (0: every core), got -2"),
])
def test_numbers_out_of_range_are_one_line_before_any_file_is_read(tmp_path, capsys, flag, value, line):
    code, _, err = _stack_cli(capsys, "--records", tmp_path / "nowhere", "--out", tmp_path / "out", flag, value)
    assert code == 1 and err == [f"kit stack: error: {line}"]
    assert not (tmp_path / "out").exists()


def test_the_submission_never_replaces_the_sample_nor_an_existing_file_unasked(comp, tmp_path, capsys):
    root = comp["root"]
    sample = tmp_path / "sample.csv"
    sample.write_bytes(comp["sample"].read_bytes())
    args = ["--records", root / "rec", "--runs", *comp["runs"], "--test-records", root / "rec_test",
            "--predictions", *comp["subs"], "--sample-submission", sample, *FAST]
    code, _, err = _stack_cli(capsys, *args, "--out", tmp_path / "a", "--submission", sample, "--force")
    assert code == 1 and err == [f"kit stack: error: {sample}: is the sample submission (--submission); write the "
                                 "stack's submission to another file"]
    assert sample.read_bytes() == comp["sample"].read_bytes() and not (tmp_path / "a").exists()
    mine = tmp_path / "mine.csv"
    mine.write_text("keep\n")
    code, _, err = _stack_cli(capsys, *args, "--out", tmp_path / "b", "--submission", mine)
    assert code == 1 and err == [f"kit stack: error: {mine}: already exists (--submission); pass --force to replace "
                                 "it, or choose another name"]
    assert mine.read_text() == "keep\n" and not (tmp_path / "b").exists()
    code, _, err = _stack_cli(capsys, *args, "--out", tmp_path / "c", "--submission", mine, "--force")
    assert code == 0, err
    assert mine.read_bytes() == (tmp_path / "c" / "submission.csv").read_bytes()


def test_a_partly_trained_run_names_its_unfinished_folds(comp, tmp_path, capsys):
    run = tmp_path / "b0"
    shutil.copytree(comp["runs"][0], run)
    oof = pd.read_csv(run / "oof.csv", dtype={"image_name": str})
    oof[~oof["fold"].isin([2, 4])].to_csv(run / "oof.csv", index=False)  # as kit train leaves it mid-run
    for k in (2, 4):
        (run / f"fold{k}" / "done.json").unlink()
    code, _, err = _stack_cli(capsys, "--records", comp["root"] / "rec", "--runs", run, "--out", tmp_path / "out",
                              *FAST)
    assert code == 1 and err == [f"kit stack: error: {run}: folds 2, 4 of 5 unfinished (no fold2/done.json); the stack "
                                 "needs every fold's out-of-fold predictions: finish it (`kit train --resume --out "
                                 f"{run}`) or leave it out of --runs"]
    assert not (tmp_path / "out").exists()


def test_an_unknown_drop_name_is_refused_with_the_names_there_are(comp, tmp_path, capsys):
    code, _, err = _stack_cli(capsys, "--records", comp["root"] / "rec", "--runs", comp["runs"][0], "--out",
                              tmp_path / "out", "--drop", "age_approx", "agee", *FAST)
    assert code == 1 and err == ["kit stack: error: --drop 'agee': no such column or feature; there are image "
                                 "predictions: b0_pred; per group: group_size, COLUMN__z, COLUMN__ratio, COLUMN__rank; "
                                 "metadata columns: age_approx, sex, anatom_site_general_challenge"]
    assert not (tmp_path / "out").exists()

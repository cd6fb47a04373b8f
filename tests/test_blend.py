"""kit blend: known answers for every method, id alignment, weights fit on OOF, and every bad input."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from kit.core import metrics
from kit.ensemble.blend import blend_arrays, fit_weights
from kit.cli.app import main

N = 200


def _sub(path, ids, values, columns=("image_name", "target")):
    values = np.asarray(values, dtype=float).reshape(len(ids), -1)
    frame = pd.DataFrame(values, columns=list(columns[1:]))
    frame.insert(0, columns[0], ids)
    frame.to_csv(path, index=False)
    return path


def _read(path):
    return pd.read_csv(path, dtype={0: str}, keep_default_na=False)


def _blend(capsys, *argv):
    code = main(["blend", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


@pytest.fixture
def three(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"ISIC_{i:07d}" for i in rng.permutation(10_000)[:N]]
    preds = [rng.random(N), rng.random(N), np.round(rng.random(N), 1)]  # the last has many ties
    paths = [_sub(tmp_path / f"m{k}.csv", ids, p) for k, p in enumerate(preds)]
    return ids, preds, paths


# --- known answers ------------------------------------------------------------------------------------


def test_rank_blend_known_answer(three, tmp_path, capsys):
    ids, preds, paths = three
    out = tmp_path / "blend.csv"
    code, lines, _ = _blend(capsys, *paths, "--out", out, "--method", "rank", "--weights", "1,2,3")
    assert code == 0
    assert lines[-1].startswith(f"{out}: rank blend of 3 files, 200 rows (weights 0.1667, 0.3333, 0.5000)")
    expected = sum(w * rankdata(p) / N for w, p in zip([1 / 6, 2 / 6, 3 / 6], preds))
    got = _read(out)
    assert got["image_name"].tolist() == ids
    np.testing.assert_allclose(got["target"], expected, rtol=1e-11)


def test_power_blend_known_answer(three, tmp_path, capsys):
    ids, preds, paths = three
    out = tmp_path / "blend.csv"
    assert _blend(capsys, *paths, "--out", out, "--method", "power", "--power", "3")[0] == 0
    expected = np.cbrt((preds[0] ** 3 + preds[1] ** 3 + preds[2] ** 3) / 3)
    np.testing.assert_allclose(_read(out)["target"], expected, rtol=1e-11)


def test_geomean_blend_known_answer(three, tmp_path, capsys):
    ids, preds, paths = three
    out = tmp_path / "blend.csv"
    assert _blend(capsys, paths[0], paths[1], "--out", out, "--method", "geomean", "--weights", "3,1")[0] == 0
    expected = preds[0] ** 0.75 * preds[1] ** 0.25
    np.testing.assert_allclose(_read(out)["target"], expected, rtol=1e-11)


def test_mean_and_weighted_mean(three, tmp_path, capsys):
    ids, preds, paths = three
    assert _blend(capsys, *paths[:2], "--out", tmp_path / "m.csv")[0] == 0
    np.testing.assert_allclose(_read(tmp_path / "m.csv")["target"], (preds[0] + preds[1]) / 2, rtol=1e-11)
    assert _blend(capsys, *paths[:2], "--out", tmp_path / "w.csv", "--weights", "0.2,0.8")[0] == 0
    np.testing.assert_allclose(_read(tmp_path / "w.csv")["target"], 0.2 * preds[0] + 0.8 * preds[1], rtol=1e-11)


@pytest.mark.parametrize("method", ["mean", "rank", "power", "geomean"])
def test_shuffled_copies_blend_to_the_same_result(three, tmp_path, capsys, method):
    ids, preds, paths = three
    assert _blend(capsys, *paths, "--out", tmp_path / "a.csv", "--method", method)[0] == 0
    rng = np.random.default_rng(7)
    shuffled = []
    for k, p in enumerate(paths):
        frame = _read(p).sample(frac=1.0, random_state=int(rng.integers(1000)))
        frame.to_csv(tmp_path / f"s{k}.csv", index=False)
        shuffled.append(tmp_path / f"s{k}.csv")
    assert _blend(capsys, *shuffled, "--out", tmp_path / "b.csv", "--method", method)[0] == 0
    a, b = _read(tmp_path / "a.csv"), _read(tmp_path / "b.csv")
    assert b["image_name"].tolist() == _read(shuffled[0])["image_name"].tolist()  # the first input's order
    merged = a.merge(b, on="image_name")
    assert len(merged) == N
    np.testing.assert_allclose(merged["target_x"], merged["target_y"], rtol=1e-11)


def test_multiclass_blended_per_class_and_renormalised(tmp_path, capsys):
    rng = np.random.default_rng(3)
    cols = ("image_id", "akiec", "bcc", "mel")
    ids = [f"ISIC_{i:07d}" for i in range(50)]
    p = [rng.dirichlet(np.ones(3), 50) for _ in range(2)]
    _sub(tmp_path / "a.csv", ids, p[0], cols)
    # the second file lists its classes in another order and its rows reversed
    _sub(tmp_path / "b.csv", ids[::-1], p[1][::-1][:, [2, 0, 1]], ("image_id", "mel", "akiec", "bcc"))
    out = tmp_path / "out.csv"
    assert _blend(capsys, tmp_path / "a.csv", tmp_path / "b.csv", "--out", out, "--method", "geomean")[0] == 0
    got = _read(out)
    assert list(got.columns) == list(cols)
    expected = np.sqrt(p[0] * p[1])
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got[list(cols[1:])].to_numpy(), expected, rtol=1e-11)
    np.testing.assert_allclose(got[list(cols[1:])].sum(axis=1), 1.0, atol=1e-11)
    ranked = blend_arrays(p, "rank")
    expected_rank = np.stack([(rankdata(p[0][:, c]) + rankdata(p[1][:, c])) / 100 for c in range(3)], axis=1)
    np.testing.assert_allclose(ranked, expected_rank / expected_rank.sum(axis=1, keepdims=True), rtol=1e-12)


def test_sample_submission_sets_the_order(three, tmp_path, capsys):
    ids, preds, paths = three
    sample = _sub(tmp_path / "sample.csv", sorted(ids), np.zeros(N))
    out = tmp_path / "out.csv"
    assert _blend(capsys, *paths[:2], "--out", out, "--sample-submission", sample)[0] == 0
    got = _read(out)
    assert got["image_name"].tolist() == sorted(ids)
    expected = pd.Series((preds[0] + preds[1]) / 2, index=ids)[sorted(ids)]
    np.testing.assert_allclose(got["target"], expected.to_numpy(), rtol=1e-11)


def test_large_shuffled_blend_matches_pandas(tmp_path, capsys):
    n = 120_000
    rng = np.random.default_rng(5)
    ids = np.array([f"ISIC_{i:07d}" for i in range(n)], dtype=object)
    frames = []
    for k in range(3):
        perm = rng.permutation(n)
        frames.append(pd.DataFrame({"image_name": ids[perm], "target": rng.random(n).astype(np.float32)}))
        frames[-1].to_csv(tmp_path / f"l{k}.csv", index=False)
    out = tmp_path / "out.csv"
    assert _blend(capsys, *[tmp_path / f"l{k}.csv" for k in range(3)], "--out", out, "--method", "rank")[0] == 0
    ref = frames[0][["image_name"]].copy()
    ref["expected"] = 0.0
    for f in frames:
        r = f.assign(r=rankdata(f["target"]) / n).set_index("image_name")["r"]
        ref["expected"] += r.reindex(ref["image_name"]).to_numpy() / 3
    got = _read(out)
    assert got["image_name"].tolist() == ref["image_name"].tolist()
    np.testing.assert_allclose(got["target"], ref["expected"], rtol=1e-11)


# --- bad input: one line naming the file and an example id, nothing written ----------------------------


def _bad(capsys, tmp_path, *argv):
    out = tmp_path / "never.csv"
    code, lines, err = _blend(capsys, *argv, "--out", out)
    assert code == 1
    assert not out.exists()
    assert len(err) == 1
    return err[0]


def test_bad_different_id_sets(three, tmp_path, capsys):
    ids, preds, paths = three
    other = _sub(tmp_path / "other.csv", ids[:-1] + ["ISIC_9999999"], preds[1])
    assert _bad(capsys, tmp_path, paths[0], other) == (
        f"kit blend: error: {other}: 1 id is not in {paths[0]}, e.g. ISIC_9999999 (row {N})"
    )


def test_bad_missing_rows(three, tmp_path, capsys):
    ids, preds, paths = three
    short = _sub(tmp_path / "short.csv", ids[:-2], preds[1][:-2])
    assert _bad(capsys, tmp_path, paths[0], short) == (
        f"kit blend: error: {short}: 2 ids of {paths[0]} are missing, e.g. {ids[-2]}"
    )


def test_bad_duplicate_ids(three, tmp_path, capsys):
    ids, preds, paths = three
    dup = _sub(tmp_path / "dup.csv", ids[:-1] + [ids[3]], preds[1])
    assert _bad(capsys, tmp_path, paths[0], dup) == f"kit blend: error: {dup}: duplicate id {ids[3]} (rows 4 and {N})"
    assert _bad(capsys, tmp_path, dup, paths[0]) == f"kit blend: error: {dup}: duplicate id {ids[3]} (rows 4 and {N})"


def test_bad_different_columns(three, tmp_path, capsys):
    ids, preds, paths = three
    other = _sub(tmp_path / "other.csv", ids, preds[1], ("image_name", "prob"))
    assert _bad(capsys, tmp_path, paths[0], other) == (
        f"kit blend: error: {other}: columns image_name,prob differ from {paths[0]}'s image_name,target"
    )


def test_an_oof_csv_is_refused_as_a_submission(binary_runs, tmp_path, capsys):
    # blending oof.csv files as submissions would average the label and fold columns as predictions
    ids, y, runs, subs = binary_runs
    oof = runs[0] / "oof.csv"
    assert _bad(capsys, tmp_path, oof, runs[1] / "oof.csv") == (
        f"kit blend: error: {oof}: has column 'pred', so it is out-of-fold predictions, not a submission; blend "
        "the submissions `kit predict` wrote and give the run folders to --oof RUN ... --fit")
    assert not (tmp_path / "out.csv").exists()


def test_bad_nan(three, tmp_path, capsys):
    ids, preds, paths = three
    p = preds[1].copy()
    p[7] = np.nan
    nan = _sub(tmp_path / "nan.csv", ids, p)
    assert _bad(capsys, tmp_path, paths[0], nan) == f"kit blend: error: {nan}: NaN in column target, e.g. id {ids[7]}"


def test_bad_empty_file(three, tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert _bad(capsys, tmp_path, three[2][0], empty) == f"kit blend: error: {empty}: empty file"


def test_bad_header_only(three, tmp_path, capsys):
    head = tmp_path / "head.csv"
    head.write_text("image_name,target\n")
    assert _bad(capsys, tmp_path, head, three[2][0]) == f"kit blend: error: {head}: no rows"


def test_bad_not_csv(three, tmp_path, capsys):
    blob = tmp_path / "model.keras"
    blob.write_bytes(b"PK\x03\x04\x00\x00\x00zip")
    assert _bad(capsys, tmp_path, three[2][0], blob) == f"kit blend: error: {blob}: not a CSV file (binary data)"


def test_bad_text_value(three, tmp_path, capsys):
    ids, preds, paths = three
    bad = tmp_path / "text.csv"
    bad.write_text("image_name,target\n" + "".join(f"{i},{'oops' if k == 5 else 0.5}\n" for k, i in enumerate(ids)))
    assert _bad(capsys, tmp_path, paths[0], bad) == (
        f"kit blend: error: {bad}: column target holds text that is not a number, e.g. id {ids[5]}: 'oops'"
    )


def test_output_never_overwrites_an_input(three, capsys):
    ids, preds, paths = three
    before = paths[1].read_bytes()
    code, _, err = _blend(capsys, *paths, "--out", paths[1])
    assert code == 1
    assert err == [f"kit blend: error: {paths[1]}: is an input of the blend; write the blend to another file"]
    assert paths[1].read_bytes() == before


def test_bad_weights_count(three, tmp_path, capsys):
    assert _bad(capsys, tmp_path, *three[2], "--weights", "1,2") == "kit blend: error: --weights: 2 weights for 3 inputs"


# --- weights fit on out-of-fold predictions -------------------------------------------------------------


def _run(folder, ids, target, preds, fold, classes=None, finished=True, metric=None):
    folder.mkdir(parents=True)
    for f in np.unique(fold):
        (folder / f"fold{f}").mkdir()
        if finished:
            (folder / f"fold{f}" / "done.json").write_text('{"score": 0.5}')
    frame = pd.DataFrame({"image_name": ids, "target": target})
    if classes is None:
        frame["pred"] = preds
    else:
        for c, name in enumerate(classes):
            frame[f"pred_{name}"] = preds[:, c]
    frame["fold"] = fold
    frame.to_csv(folder / "oof.csv", index=False)
    if metric:
        (folder / "cv.json").write_text(json.dumps({"metric": metric, "folds": {}, "overall": 0.5}))
    return folder


@pytest.fixture
def binary_runs(tmp_path):
    rng = np.random.default_rng(11)
    n = 600
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    y = (rng.random(n) < 0.3).astype(int)
    fold = np.arange(n) % 5
    runs, subs = [], []
    for k, noise in enumerate([1.0, 1.3, 1.6]):
        score = y + rng.normal(0, noise, n)
        p = 1 / (1 + np.exp(-score))
        order = rng.permutation(n)  # each run writes its OOF in its own order
        runs.append(_run(tmp_path / f"run{k}", [ids[i] for i in order], y[order], p[order], fold[order], metric="auc"))
        subs.append(_sub(tmp_path / f"sub{k}.csv", [f"T_{i:04d}" for i in range(100)], rng.random(100)))
        _sidecar(subs[-1], runs[-1])
    return ids, y, runs, subs


def _sidecar(sub, run):
    """The JSON `kit predict` writes beside a submission, naming the run that wrote it."""
    sub.with_suffix(".json").write_text(json.dumps({"submission": str(sub), "run": str(run), "model": "tiny_cnn"}))
    return sub


def test_fit_scores_at_least_the_best_member(binary_runs, tmp_path, capsys):
    ids, y, runs, subs = binary_runs
    out = tmp_path / "fit.csv"
    code, lines, err = _blend(capsys, *subs, "--out", out, "--method", "rank", "--oof", *runs, "--fit")
    assert code == 0, err
    fit = fit_weights(runs, method="rank")
    assert fit.blend_score >= max(fit.member_scores)
    assert fit.blend_score > max(fit.member_scores)  # independent noise: blending helps here
    # AUC: each member's score is the mean of its per-fold AUCs; its pooled OOF AUC is reported beside it
    assert fit.objective == "fold mean"
    for run, s, pooled in zip(runs, fit.member_scores, fit.member_pooled):
        oof = pd.read_csv(run / "oof.csv")
        per_fold = [roc_auc_score(g["target"], g["pred"]) for _, g in oof.groupby("fold")]
        assert s == pytest.approx(np.mean(per_fold), abs=1e-12)
        assert pooled == pytest.approx(roc_auc_score(oof["target"], oof["pred"]), abs=1e-12)
    assert np.isclose(sum(fit.weights), 1.0)
    assert lines[0].split() == ["run", "oof", "auc", "(fold", "mean)", "pooled", "weight"]
    assert [l.split()[0] for l in lines[1:5]] == [str(r) for r in runs] + ["blend"]
    assert float(lines[4].split()[1]) == pytest.approx(fit.blend_score, abs=1e-6)
    # the fitted weights were applied to the submissions
    expected = sum(w * rankdata(_read(s)["target"]) / 100 for w, s in zip(fit.weights, subs))
    np.testing.assert_allclose(_read(out)["target"], expected, rtol=1e-11)


def test_fit_multiclass_balanced_accuracy(tmp_path):
    rng = np.random.default_rng(2)
    n, classes = 300, ["akiec", "bcc", "mel"]
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    y = rng.integers(0, 3, n)
    runs = []
    for k in range(3):
        logits = np.eye(3)[y] * 1.2 + rng.normal(0, 1.0, (n, 3))
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        runs.append(_run(tmp_path / f"r{k}", ids, y, p, np.arange(n) % 5, classes))
    fit = fit_weights(runs, method="mean")
    assert fit.metric == "balanced_accuracy"
    oof = pd.read_csv(runs[0] / "oof.csv")
    first = balanced_accuracy_score(y, oof[[f"pred_{c}" for c in classes]].to_numpy().argmax(axis=1))
    assert fit.member_scores[0] == pytest.approx(first, abs=1e-12)
    assert fit.blend_score >= max(fit.member_scores)


def test_rank_per_fold(tmp_path):
    rng = np.random.default_rng(4)
    n = 500
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    y = (rng.random(n) < 0.4).astype(int)
    fold = np.arange(n) % 5
    # fold models calibrated differently: each fold's predictions shifted by its own offset
    p = np.clip(0.3 * y + rng.normal(0, 0.3, n) * 0.5 + 0.1 * fold, 0, None) / 3
    run = _run(tmp_path / "r0", ids, y, p, fold)
    per_fold = np.empty(n)
    for f in range(5):
        rows = fold == f
        per_fold[rows] = rankdata(p[rows]) / rows.sum()
    fit = fit_weights([run], method="rank", rank_per_fold=True)
    # the fit ranks within folds; the pooled figure beside it is the run's own, as cv.json reports it
    assert fit.blend_pooled == pytest.approx(roc_auc_score(y, per_fold), abs=1e-12)
    assert fit.member_pooled[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    unranked = fit_weights([run], method="rank", rank_per_fold=False)
    assert unranked.blend_pooled == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    # ranking within folds is the default for AUC
    assert fit_weights([run], method="rank").blend_pooled == pytest.approx(roc_auc_score(y, per_fold), abs=1e-12)


def test_auc_fit_prefers_the_run_better_on_every_fold_over_the_better_pooled_one(tmp_path):
    # PCam seen in practice: folds 0.992 / 0.998 / 0.988 but 0.961 pooled, and the pooled fit gave that run
    # weight 0. Run A ranks better within every fold but each fold model is calibrated its own way.
    rng = np.random.default_rng(7)
    n = 900
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    y = (rng.random(n) < 0.3).astype(int)
    fold = np.arange(n) % 3
    score_a = y * 2.5 + rng.normal(0, 1, n)
    pa = 1 / (1 + np.exp(-(score_a * 0.4 + np.array([-3.0, 0.0, 3.0])[fold])))  # strong, badly pooled
    pb = 1 / (1 + np.exp(-(y * 1.2 + rng.normal(0, 1, n))))  # weaker, consistently calibrated
    a = _run(tmp_path / "a", ids, y, pa, fold, metric="auc")
    b = _run(tmp_path / "b", ids, y, pb, fold, metric="auc")
    fit = fit_weights([a, b], method="rank")
    assert fit.member_pooled[0] < fit.member_pooled[1]  # pooled, A looks worse ...
    assert fit.member_scores[0] > fit.member_scores[1]  # ... but per fold it is better
    assert fit.weights[0] > 0.5
    assert fit_weights([a, b], method="mean", rank_per_fold=False).member_scores[0] > fit.member_scores[1]


def _greedy_weights(members, score_of, max_steps=100):
    """Ensemble selection with replacement, written out here: start at the best member, add the member that
    scores best until nothing improves."""
    scores = [score_of(m) for m in members]
    counts = np.zeros(len(members), np.int64)
    counts[int(np.argmax(scores))] = 1
    acc, current = members[int(np.argmax(scores))].copy(), max(scores)
    for _ in range(max_steps):
        trial = [score_of((acc + m) / (counts.sum() + 1)) for m in members]
        j = int(np.argmax(trial))
        if trial[j] <= current + 1e-12:
            break
        counts[j] += 1
        acc, current = acc + members[j], trial[j]
    return list(counts / counts.sum())


def test_pauc_blend_fits_per_fold_on_ranks_like_auc(tmp_path):
    # ISIC 2024's partial AUC ranks, as AUC does: two runs as in the PCam case above, A ranking better within
    # every fold but calibrated its own way per fold, B weaker and consistent
    rng = np.random.default_rng(7)
    n = 900
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    y = (rng.random(n) < 0.3).astype(int)
    fold = np.arange(n) % 3
    pa = 1 / (1 + np.exp(-((y * 2.5 + rng.normal(0, 1, n)) * 0.4 + np.array([-3.0, 0.0, 3.0])[fold])))
    pb = 1 / (1 + np.exp(-(y * 1.2 + rng.normal(0, 1, n))))
    a = _run(tmp_path / "a", ids, y, pa, fold, metric="pauc")
    b = _run(tmp_path / "b", ids, y, pb, fold, metric="pauc")
    fit = fit_weights([a, b], method="mean")

    def ranked(p):
        out = np.empty(n)
        for f in range(3):
            out[fold == f] = rankdata(p[fold == f]) / (fold == f).sum()
        return out

    def fold_mean(p):
        return np.mean([metrics.pauc(y[fold == f], p[fold == f]) for f in range(3)])

    per_fold = _greedy_weights([ranked(pa), ranked(pb)], fold_mean)
    pooled = _greedy_weights([pa, pb], lambda p: metrics.pauc(y, p))
    assert fit.metric == "pauc" and fit.objective == "fold mean"
    assert fit.weights == pytest.approx(per_fold, abs=1e-12)
    assert fit.member_scores == pytest.approx([fold_mean(ranked(pa)), fold_mean(ranked(pb))], abs=1e-12)
    assert per_fold[0] > 0.5 and pooled[0] < 0.5  # the data tell the two fits apart
    assert fit.weights != pytest.approx(pooled, abs=0.1)


def test_bad_run_without_oof(binary_runs, tmp_path, capsys):
    ids, y, runs, subs = binary_runs
    (runs[1] / "oof.csv").unlink()
    err = _bad(capsys, tmp_path, *subs, "--oof", *runs, "--fit")
    assert err == (
        f"kit blend: error: {runs[1] / 'oof.csv'}: missing; the run has finished folds but no out-of-fold predictions"
    )


def test_bad_run_without_finished_folds(binary_runs, tmp_path, capsys):
    ids, y, runs, subs = binary_runs
    unfinished = _run(tmp_path / "unfinished", ids, y, np.full(len(ids), 0.5), np.arange(len(ids)) % 5, finished=False)
    err = _bad(capsys, tmp_path, *subs, "--oof", runs[0], runs[1], unfinished, "--fit", "--pair-by-order")
    assert err == f"kit blend: error: {unfinished}: no finished folds (no fold*/done.json); train the run first"


def test_bad_oof_ids_do_not_match(binary_runs, tmp_path, capsys):
    ids, y, runs, subs = binary_runs
    other = _run(tmp_path / "other", ids[:-1] + ["ISIC_7777777"], y, np.full(len(ids), 0.5), np.arange(len(ids)) % 5)
    err = _bad(capsys, tmp_path, *subs, "--oof", runs[0], runs[1], other, "--fit", "--pair-by-order")
    assert err == (
        f"kit blend: error: {other / 'oof.csv'}: 1 id is not in {runs[0] / 'oof.csv'}, e.g. ISIC_7777777 (row {len(ids)})"
    )


def test_rank_per_fold_needs_fit(three, tmp_path, capsys):
    err = _bad(capsys, tmp_path, *three[2], "--rank-per-fold")
    assert err == "kit blend: error: --rank-per-fold: only with --fit (it ranks the OOF predictions the weights are fit on)"


def test_bad_oof_count(binary_runs, tmp_path, capsys):
    ids, y, runs, subs = binary_runs
    err = _bad(capsys, tmp_path, *subs, "--oof", *runs[:2], "--fit")
    assert err == "kit blend: error: --oof: 2 run folders for 3 submissions (one per submission)"


def test_hash_collisions_fall_back_to_exact_ids(three, tmp_path, capsys, monkeypatch):
    import kit.ensemble.submission

    ids, preds, paths = three
    shuffled = tmp_path / "shuffled.csv"
    _read(paths[1]).sample(frac=1.0, random_state=3).to_csv(shuffled, index=False)
    assert _blend(capsys, paths[0], shuffled, "--out", tmp_path / "a.csv", "--method", "rank")[0] == 0
    # every id hashing to the same key: alignment and duplicate checks must still be exact
    monkeypatch.setattr(kit.ensemble.submission, "_hash_ids", lambda ids: np.zeros(len(ids), np.uint64))
    assert _blend(capsys, paths[0], shuffled, "--out", tmp_path / "b.csv", "--method", "rank")[0] == 0
    assert _read(tmp_path / "a.csv").equals(_read(tmp_path / "b.csv"))
    dup = _sub(tmp_path / "dup.csv", ids[:-1] + [ids[3]], preds[1])
    assert _bad(capsys, tmp_path, dup, paths[0]) == f"kit blend: error: {dup}: duplicate id {ids[3]} (rows 4 and {N})"


# --- each submission blended with the weight fit on its own run ---------------------------------------------


def test_runs_listed_in_another_order_are_paired_by_the_sidecars(binary_runs, tmp_path, capsys):
    ids, y, _, _ = binary_runs
    rng = np.random.default_rng(3)
    n, fold = len(ids), np.arange(len(ids)) % 5
    runs, subs = [], []
    for k, noise in enumerate([0.7, 1.5]):  # the fit weighs the first more: a swap would show
        p = 1 / (1 + np.exp(-(y + rng.normal(0, noise, n))))
        runs.append(_run(tmp_path / f"unequal{k}", ids, y, p, fold, metric="auc"))
        subs.append(_sidecar(_sub(tmp_path / f"unequal{k}.csv", [f"T_{i:04d}" for i in range(100)], rng.random(100)),
                             runs[-1]))
    w = fit_weights(runs, method="rank").weights
    assert w[0] > w[1]
    code, lines, err = _blend(capsys, *subs, "--out", tmp_path / "a.csv", "--method", "rank", "--oof", *runs, "--fit")
    assert code == 0, err
    assert lines[0].startswith("run ")  # already in the submissions' order: nothing to say
    code, lines, err = _blend(capsys, *subs, "--out", tmp_path / "b.csv", "--method", "rank", "--oof", *runs[::-1],
                              "--fit")
    assert code == 0, err
    assert lines[0] == f"--oof: runs taken in the submissions' order, as their sidecars name them: {runs[0]} {runs[1]}"
    assert lines[-1].startswith(f"{tmp_path / 'b.csv'}: rank blend of 2 files, 100 rows "
                                f"(weights {w[0]:.4f}, {w[1]:.4f})")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    # a relative --oof path names the same folder as the sidecar's absolute one
    code, _, err = _blend(capsys, *subs, "--out", tmp_path / "c.csv", "--method", "rank", "--oof",
                          *[os.path.relpath(r) for r in runs[::-1]], "--fit")
    assert code == 0, err
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "c.csv").read_bytes()
    # --pair-by-order takes the order given, as asked: the weights land on the other files
    code, lines, err = _blend(capsys, *subs, "--out", tmp_path / "d.csv", "--method", "rank", "--oof", *runs[::-1],
                              "--fit", "--pair-by-order")
    assert code == 0, err
    assert lines[-1].startswith(f"{tmp_path / 'd.csv'}: rank blend of 2 files, 100 rows "
                                f"(weights {w[1]:.4f}, {w[0]:.4f})")


def test_a_submission_without_a_sidecar_is_refused_unless_paired_by_order(binary_runs, tmp_path, capsys):
    ids, y, runs, subs = binary_runs
    subs[1].with_suffix(".json").unlink()
    assert _bad(capsys, tmp_path, *subs, "--oof", *runs, "--fit") == (
        f"kit blend: error: {subs[1]}: no sidecar {subs[1].with_suffix('.json')} to say which run wrote it, so it "
        f"cannot be paired with --oof {runs[1]}; pass --pair-by-order if --oof lists the runs in the order of the "
        "submissions")
    assert _blend(capsys, *subs, "--out", tmp_path / "ok.csv", "--oof", *runs, "--fit", "--pair-by-order")[0] == 0


@pytest.mark.parametrize("text", ["{not json", '["a list"]', '{"run": 3}', '{"model": "b0"}'])
def test_an_unreadable_sidecar_is_refused(binary_runs, tmp_path, capsys, text):
    ids, y, runs, subs = binary_runs
    side = subs[2].with_suffix(".json")
    side.write_text(text)
    assert _bad(capsys, tmp_path, *subs, "--oof", *runs, "--fit") == (
        f"kit blend: error: {side}: unreadable or names no \"run\", so {subs[2]} cannot be paired with --oof "
        f"{runs[2]}; pass --pair-by-order if --oof lists the runs in the order of the submissions")


def test_a_sidecar_naming_a_run_not_in_oof_is_refused(binary_runs, tmp_path, capsys):
    ids, y, runs, subs = binary_runs
    _sidecar(subs[0], tmp_path / "elsewhere")
    assert _bad(capsys, tmp_path, *subs, "--oof", *runs, "--fit") == (
        f"kit blend: error: {subs[0]}: its sidecar {subs[0].with_suffix('.json')} names run {tmp_path / 'elsewhere'}, "
        "which is not among the --oof run folders")


def test_two_submissions_of_one_run_are_refused(binary_runs, tmp_path, capsys):
    ids, y, runs, subs = binary_runs
    _sidecar(subs[2], runs[0])
    assert _bad(capsys, tmp_path, *subs, "--oof", *runs, "--fit") == (
        f"kit blend: error: {subs[2]}: its sidecar names run {runs[0]}, as {subs[0]}'s does; each submission needs "
        "a run of its own in --oof")


def test_pair_by_order_needs_fit(three, tmp_path, capsys):
    assert _bad(capsys, tmp_path, *three[2], "--pair-by-order") == (
        "kit blend: error: --pair-by-order: only with --fit (it pairs the submissions with the --oof runs)")


@pytest.mark.parametrize("power", ["inf", "-inf", "nan", "0"])
def test_power_must_be_finite_and_positive(three, binary_runs, tmp_path, capsys, power):
    expected = f"kit blend: error: --power: must be a finite number > 0, got {float(power)}"
    assert _bad(capsys, tmp_path, *three[2], "--method", "power", f"--power={power}") == expected
    ids, y, runs, subs = binary_runs
    assert _bad(capsys, tmp_path, *subs, "--method", "power", f"--power={power}", "--oof", *runs, "--fit") == expected

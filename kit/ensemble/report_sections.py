"""The sections of ``kit report``'s page, each one ``<section id=...>`` of tables, plots and notes built from
a run's ``RunData`` (the order they appear in is kit.ensemble.report's)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from kit.core import metrics
from kit.runs import plots, folder as runfolder
from kit.core.errors import KitError
from kit.ensemble.gradcam import gradcam
from kit.ensemble.report_data import RecordsRead, RunData, _correct_sample, _with_predicted, errors_of
from kit.ensemble.report_html import (_array_png, _binary_plots, _confusion_plot, _fig_png, _img, _importance_plot,
                             _learning_curves, _lr_plot, _note, _num, _overlay, _section, _shakeup_plot, _table)
from kit.runs.folder import REPORT_JSON, RunFolder


def _histories(run: Path) -> dict[int, pd.DataFrame]:
    out = {}
    folder = RunFolder(run)
    for fold in folder.fold_dirs():
        path = folder.history_path(fold)
        if path.is_file() and path.stat().st_size:
            out[fold] = pd.read_csv(path)
    return out


def _config_section(data: RunData) -> str:
    if not data.config_text:
        return _section("config", "Config", _note(f"no {runfolder.CONFIG} in the run folder"))
    return _section("config", f"Config (resolved, RUN/{runfolder.CONFIG})", f"<pre>{html.escape(data.config_text)}</pre>")


def _records_section(data: RunData) -> str:
    m = data.manifest
    where = data.records or data.config.get("records", "")
    if m is None:
        return _section("records", "Records", _note(f"records {where}: not found; the run trained on them"))
    info = [("folder", str(where)), ("source", m.source), ("layout", m.layout), ("image size", m.image_size),
            ("classes", ", ".join(m.classes)), ("images", m.count),
            ("fold seed", "" if m.fold_seed is None else m.fold_seed)]
    folds = [(k, m.folds[k]) for k in m.fold_ids]
    per_class = any(f.class_counts is not None for _, f in folds)
    if per_class:  # one column per class, in the records' class order
        labels = list(dict.fromkeys([*m.classes, *(c for _, f in folds for c in (f.class_counts or {}))]))
        counts = [[(f.class_counts or {}).get(c, "") for c in labels] for _, f in folds]
    else:
        labels = ["positives"]
        counts = [["" if f.positives is None else f.positives] for _, f in folds]
    rows = [[k, f.images, "" if f.groups is None else f.groups, *c] for (k, f), c in zip(folds, counts)]
    body = (_table(["", ""], info, "kv")
            + _table(["fold", "images", "groups", *labels], rows, "folds"))
    return _section("records", "Records it trained on", body)


def _score(cv: Mapping[str, Any], key: str) -> float | None:
    """A score of the CV summary, None where it is null (kit writes NaN as null) or absent."""
    value = cv.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _cv_section(data: RunData) -> str:
    cv = data.cv
    folds = cv.get("folds", {})
    rows = [[f"fold {k}", _num(v)] for k, v in folds.items()]
    rows.append(["mean of folds", _num(_score(cv, "fold_mean"))])
    rows.append(["std over folds", _num(_score(cv, "fold_std"))])
    rows.append(["pooled out of fold", _num(_score(cv, "overall"))])
    tta = ", ".join(map(str, cv.get("tta_views", []))) or "-"
    body = (f'<p class="key">metric: <b>{html.escape(data.metric)}</b>; out-of-fold TTA views: {html.escape(tta)}</p>'
            + _table(["", data.metric], rows, "cv")
            + _note("The mean of folds is what one fold model is worth; pooled scores every out-of-fold "
                    "prediction together, and folds whose models scale their probabilities differently can pull "
                    "it below every fold's own score."))
    scored = {k: float(v) for k, v in folds.items() if v is not None and math.isfinite(v)}
    if len(scored) > 1:
        plt = plots.pyplot()
        fig, ax = plt.subplots(figsize=(5, 2.8))
        ax.bar([f"fold {k}" for k in scored], list(scored.values()), color="#4477aa")
        overall = _score(cv, "overall")
        if overall is not None:
            ax.axhline(overall, color="k", ls="--", label="pooled")
            ax.legend(fontsize="small")
        low = min([*scored.values(), *([overall] if overall is not None else [])])
        ax.set(ylim=(max(0.0, low - 0.1), 1.0), title="how the folds disagree")
        body += f'<div class="plots">{_img(_fig_png(fig), "per-fold scores")}</div>'
    return _section("cv", "Cross-validation", body)


def _curves_sections(data: RunData) -> list[str]:
    histories = _histories(data.run)
    if not histories:
        msg = _note(f"no fold*/{runfolder.HISTORY} in the run folder")
        return [_section("curves", "Learning curves", msg), _section("lr", "Learning rate", msg)]
    curves = _section("curves", "Learning curves",
                      f'<div class="plots">{_img(_learning_curves(histories, data.metric), "learning curves")}</div>')
    if all("lr" in h for h in histories.values()):
        lr = f'<div class="plots">{_img(_lr_plot(histories), "learning rate")}</div>'
    else:
        lr = _note(f"{runfolder.HISTORY} has no lr column")
    return [curves, _section("lr", "Learning rate", lr)]


def _class_sections(data: RunData) -> str:
    return _CLASS_SECTIONS[data.task.name](data)


def _binary_section(data: RunData) -> str:
    roc, pr, cal = _binary_plots(data.oof)
    body = (f'<div class="plots">{_img(roc, "ROC")}{_img(pr, "precision-recall")}{_img(cal, "calibration")}</div>'
            + _note("Thick black: every out-of-fold prediction pooled; thin: one fold each."))
    return _section("binary", "ROC, precision-recall and calibration", body)


def _multiclass_section(data: RunData) -> str:
    from sklearn.metrics import confusion_matrix

    y, p = data.oof["target"].to_numpy(int), data.pred_matrix()
    cm = confusion_matrix(y, p.argmax(1), labels=range(len(data.classes))).astype(float)
    table = metrics.per_class(y, p, data.classes)
    rows = [[r["class"], int(r["support"]), _num(r["sensitivity"]), _num(r["precision"]), _num(r["auc"])]
            for _, r in table.iterrows()]
    body = (f'<div class="plots">{_img(_confusion_plot(cm, data.classes), "confusion matrix")}</div>'
            + _table(["class", "images", "recall", "precision", "one-vs-rest AUC"], rows, "recall"))
    return _section("multiclass", "Confusion matrix and per-class recall", body)


_CLASS_SECTIONS: dict[str, Callable[[RunData], str]] = {"binary": _binary_section, "multiclass": _multiclass_section}


def _label(data: RunData, k: int) -> str:
    return data.classes[k] if 0 <= k < len(data.classes) else str(k)


def _pred_text(data: RunData, row: pd.Series) -> str:
    return _PRED_TEXT[data.task.name](data, row)


# a mistake's prediction in words: the probability (binary), or the predicted class and its probability
_PRED_TEXT: dict[str, Callable[[RunData, pd.Series], str]] = {
    "binary": lambda data, row: f"p={row['pred']:.3f}",
    "multiclass": lambda data, row: (f"{_label(data, int(row['predicted']))} "
                                     f"({row[f'pred_{_label(data, int(row.predicted))}']:.2f})"),
}


def _mistakes_section(data: RunData, worst: pd.DataFrame, images: Mapping[str, np.ndarray]) -> str:
    cards = []
    for _, r in worst.iterrows():
        img = images.get(r["image_name"])
        pic = _img(_array_png(img), r["image_name"]) if img is not None else "<div>(image not read)</div>"
        cards.append(f'<div class="card" data-id="{html.escape(r["image_name"])}">{pic}<br><b>{html.escape(r["image_name"])}'
                     f'</b><br>true {html.escape(_label(data, int(r["target"])))}, {html.escape(_pred_text(data, r))}'
                     f'<br>fold {int(r["fold"])}, error {r["error"]:.3f}</div>')
    pred_cols = data.pred_columns()
    rows = [[r["image_name"], int(r["target"]), *[_num(r[c]) for c in pred_cols], _num(r["error"]), int(r["fold"])]
            for _, r in worst.iterrows()]
    body = (_note("Largest error first: |target - pred| for a binary run, 1 - the probability of the true class "
                  "otherwise. Each image was predicted by the fold model that never trained on it.")
            + f'<div class="grid">{"".join(cards)}</div>'
            + _table(["image_name", "target", *pred_cols, "error", "fold"], rows, "mistakes"))
    if not images and data.records is None:
        body += _note("thumbnails left out: the records were not found")
    return _section("mistakes", f"The {len(worst)} worst out-of-fold mistakes", body)


def _patients_section(data: RunData, groups: Mapping[str, str], worst: pd.DataFrame) -> str:
    if not groups:
        return _section("patients", "Per patient", _note("no groups read (records not found)"))
    df = data.oof[["image_name", "target"]].copy()
    df["group"] = df["image_name"].map(groups)
    df["error"] = errors_of(data)
    df["pred"] = data.task.confidence(data.pred_matrix())
    if df["group"].isna().all() or (df["group"] == df["image_name"]).all() or df["group"].nunique() == len(df):
        return _section("patients", "Per patient", _note("the records hold no groups (one image per group)"))
    g = df.groupby("group").agg(images=("image_name", "size"), positives=("target", "sum"),
                                mean_error=("error", "mean"), max_pred=("pred", "max"))
    text = (f"{len(g)} groups, {g['images'].mean():.1f} images each on average. ")
    binary = data.task.name == "binary"  # positives and a patient-level AUC mean something for a binary run
    if binary and g["positives"].gt(0).nunique() == 2:
        from sklearn.metrics import roc_auc_score

        text += (f"Patient-level AUC (a patient's highest prediction against whether any of their images is "
                 f"positive): {roc_auc_score(g['positives'] > 0, g['max_pred']):.4f}. ")
    shown = g.loc[[x for x in dict.fromkeys(df.set_index("image_name").loc[worst["image_name"], "group"]) if x in g.index]]
    rows = [[name, int(r["images"]), int(r["positives"]) if binary else "-", _num(r["mean_error"]),
             _num(r["max_pred"])] for name, r in shown.iterrows()]
    head = ["group", "images", "positives", "mean error", "max pred" if binary else "max confidence"]
    body = _note(text + "The groups of the worst mistakes:") + _table(head, rows, "patients")
    return _section("patients", "Per patient (group)", body)


def _gradcam_section(data: RunData, worst: pd.DataFrame, read: RecordsRead, n: int,
                     seed: int) -> tuple[str, list[str]]:
    notes: list[str] = []
    images = read.images
    folder = RunFolder(data.run)
    if not any(folder.best_model(k).is_file() for k in folder.fold_dirs()):
        return _section("gradcam", "Grad-CAM", _note(f"left out: no fold*/{runfolder.BEST} (a stack has no image "
                                                      "model)")), notes
    if not images:
        return _section("gradcam", "Grad-CAM", _note("left out: the records were not found")), notes
    df = _with_predicted(data)
    wrong = [i for i, t, p in zip(worst["image_name"], worst["target"], worst["predicted"])
             if t != p and i in images][:n]
    right = [i for i in _correct_sample(df, n, seed)["image_name"] if i in images]
    import keras  # noqa: F401  before kit.training.models: the backend is settled by kit.core.runtime

    from kit.training import models  # noqa: F401  registers kit's layers, so a fold's best model loads

    cards = {"correct": [], "wrong": []}
    fold_of = dict(zip(df["image_name"], df["fold"].astype(int)))
    by_fold: dict[int, list[tuple[str, str]]] = {}
    for kind, ids in (("wrong", wrong), ("correct", right)):
        for i in ids:
            by_fold.setdefault(fold_of[i], []).append((kind, i))
    for fold, items in sorted(by_fold.items()):
        path = folder.best_model(fold)
        if not path.is_file():
            notes.append(f"{path}: missing; Grad-CAM left out for fold {fold}")
            continue
        model = keras.saving.load_model(path, compile=False)
        meta = np.stack([read.meta[i] for _, i in items]) if read.meta else None
        try:
            # the predicted class: a fixed positive class leaves the many confident negatives all blue (seen)
            heat, _ = gradcam(model, np.stack([images[i] for _, i in items]), meta=meta)
        except KitError as exc:
            return _section("gradcam", "Grad-CAM", _note(f"left out: {exc}")), notes
        for (kind, i), h in zip(items, heat):
            row = df[df["image_name"] == i].iloc[0]
            cards[kind].append(
                f'<div class="card" data-id="{html.escape(i)}">{_img(_array_png(images[i]), i)}'
                f'{_img(_array_png(_overlay(images[i], h)), "Grad-CAM " + i)}<br><b>{html.escape(i)}</b><br>'
                f'true {html.escape(_label(data, int(row["target"])))}, {html.escape(_pred_text(data, row))}</div>')
    text = ("Where each fold model found the evidence for the class it predicted: Grad-CAM on the backbone's last "
            "feature map (a vision transformer: the patch tokens entering its last block, on their grid; red: most "
            "weight), for the worst mistakes and for a random sample of correct predictions of every class.")
    if read.meta:
        text += " The model also reads metadata: each image was given its own, as in training, and held fixed."
    body = _note(text)
    for kind in ("wrong", "correct"):
        body += f"<h3>{kind}</h3>" + (f'<div class="grid {kind}">{"".join(cards[kind])}</div>' if cards[kind]
                                      else _note(f"no {kind} out-of-fold predictions"))
    return _section("gradcam", "Grad-CAM", body), notes


def _shakeup_section(data: RunData, shake: dict, samples: Mapping[str, np.ndarray], source: str) -> str:
    m = data.metric
    rows = []
    for key, label in (("public", "public leaderboard"), ("private", "private leaderboard"),
                       ("difference", "private - public")):
        if key in shake:
            s = shake[key]
            rows.append([label, _num(s["mean"]), _num(s["std"]), _num(s["p05"]), _num(s["p95"])])
    lead = (f"The out-of-fold predictions drawn {shake['draws']} times (with replacement) into a public "
            f"leaderboard of {shake['public_size']:,} and a private one of {shake['private_size']:,} images "
            f"({source}). ")
    if "difference" in shake:
        d = shake["difference"]
        lead += (f"Nine draws in ten move {m} from public to private by between {d['p05']:+.4f} and {d['p95']:+.4f}: "
                 f"a gap between two submissions smaller than that is noise, not a better model.")
    if shake["skipped_draws"]:
        lead += f" {shake['skipped_draws']} draws held one class only and were skipped."
    body = (_note(lead) + _table(["", "mean", "std", "5%", "95%"], rows, "shakeup")
            + f'<div class="plots">{_img(_shakeup_plot(samples, m), "shake-up")}</div>'
            + _note(f"The same numbers are in {REPORT_JSON} under \"shakeup\". The draws assume the test set looks "
                    "like the training set; a shifted test set moves the leaderboard further."))
    return _section("shakeup", "Shake-up estimate: how far the leaderboard may move", body)


def _importance_table(run: Path) -> tuple[pd.DataFrame, str] | None:
    """(feature, importance..., where from): kit stack's features.csv (importance_<model kind> columns, shown
    with their mean), else the first ``*importance*.csv`` of two columns (name, value)."""
    features = run / "features.csv"
    if features.is_file():
        table = pd.read_csv(features)
        kinds = [c for c in table.columns if c.startswith("importance_")]
        if "feature" in table.columns and kinds:
            table = table.assign(importance=table[kinds].mean(axis=1))
            keep = ["feature", "importance", *kinds] + [c for c in ("source",) if c in table.columns]
            return table[keep].sort_values("importance", ascending=False, kind="mergesort"), features.name
    for path in sorted(run.glob("*importance*.csv")):
        table = pd.read_csv(path)
        if table.shape[1] >= 2:
            table = table.iloc[:, :2]
            return table.sort_values(table.columns[1], ascending=False, kind="mergesort"), path.name
    return None


def _importance_section(run: Path, cv: Mapping[str, Any]) -> str | None:
    found = _importance_table(run)
    if found is None:
        return None
    table, source = found
    head = [str(c) for c in table.columns]
    rows = [[r.iloc[0], *[_num(float(v)) if isinstance(v, (int, float, np.number)) else v for v in r.iloc[1:]]]
            for _, r in table.head(40).iterrows()]
    body = (_note(f"From {source}, most important first (the 40 first of {len(table)}).")
            + f'<div class="plots">{_img(_importance_plot(table), "importance")}</div>'
            + _table(head, rows, "importance"))
    kinds = cv.get("models")
    if isinstance(kinds, dict) and kinds:
        body += _table(["model kind", "pooled", "blend weight"],
                       [[k, _num(v.get("overall")), _num(v.get("weight"))] for k, v in kinds.items()], "kinds")
    return _section("importance", "Feature importance (stack)", body)

"""``kit report``: one self-contained HTML page about a run, and the leaderboard shake-up estimate.

The page (``RUN/report.html`` by default) embeds every image as base64 PNG and loads nothing from the
network, so it opens from a Kaggle kernel's output or a laptop alike. It opens with the scores and the
curves; what the run was and what it read come last. Its sections (``<section id=...>``), in order:

    cv            per-fold scores, their mean and spread, the pooled out-of-fold score (the run's CV summary)
    curves        learning curves per fold (loss and the metric, training and validation)
    lr            the learning rate each epoch ran at (each fold's history)
    binary        ROC and precision-recall per fold and pooled, the calibration curve   (binary runs)
    multiclass    the confusion matrix and per-class recall                            (multi-class runs)
    mistakes      the worst out-of-fold mistakes as thumbnails read from the records
    patients      the per-patient (group) view, where the records hold groups
    gradcam       Grad-CAM heatmaps over a sample of correct and wrong predictions
    shakeup       bootstrap draws of the public and private leaderboards from the OOF predictions
    importance    a stack's feature importances (when the folder holds them)
    records       the records the run trained on (manifest: source, size, classes, images per fold and class)
    config        the resolved config

``kit report`` writes nothing else into the run but ``RUN/report.json`` (the shake-up and where its
leaderboard sizes came from); the CV summary and every other file of the run stay as training left them, and an
``--out`` naming one of them is refused.

The HTML is built with f-strings and ``html.escape``: the page is one fixed layout of a dozen tables
and images, which a template engine (jinja2) would not make shorter, and kit would carry one more
dependency into every offline kernel for it. TensorFlow and Keras are imported only where the records
are read and Grad-CAM runs; matplotlib draws the plots.

This module assembles the page and writes it. Its parts: what is read from the run (kit.ensemble.report_data), the
sections (kit.ensemble.report_sections) and their building blocks (kit.ensemble.report_html), Grad-CAM (kit.ensemble.gradcam) and the
shake-up estimate (kit.ensemble.report_shakeup); their public names are importable from here too.
"""

from __future__ import annotations

import html
import os
import time
from dataclasses import dataclass
from pathlib import Path

from kit.core import fsutil
from kit.runs import folder as runfolder
from kit.core.errors import KitError
from kit.ensemble.gradcam import _reduces_a_map, gradcam  # noqa: F401  _reduces_a_map: Grad-CAM's tests reach it here
from kit.ensemble.report_data import (RecordsRead, RunData, _correct_sample, _with_predicted, errors_of, load_run_data,
                             read_oof, read_records, worst_mistakes)
from kit.ensemble.report_html import _note, _section
from kit.ensemble.report_sections import (_class_sections, _config_section, _curves_sections, _cv_section, _gradcam_section,
                                 _importance_section, _mistakes_section, _patients_section, _records_section, _score,
                                 _shakeup_section)
from kit.ensemble.report_shakeup import (MAX_DRAWS, MAX_LEADERBOARD, NO_SIZES, check_shakeup_settings, leaderboard_sizes,
                                shakeup)
from kit.runs.folder import RunFolder

__all__ = ["MAX_DRAWS", "MAX_LEADERBOARD", "NO_SIZES", "REPORT_JSON", "RecordsRead", "ReportResult", "RunData",
           "check_out", "check_shakeup_settings", "errors_of", "format_result", "gradcam", "leaderboard_sizes",
           "load_run_data", "read_oof", "read_records", "shakeup", "worst_mistakes", "write_report"]

REPORT_JSON = runfolder.REPORT_JSON  # kit report's own numbers, in the run folder


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1150px;color:#222;
padding:0 16px}h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}.note{color:#666;font-size:.9em}
pre{background:#f7f7f7;padding:8px;font-size:.85em;max-height:420px;overflow:auto}
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;padding:6px;font-size:.8em;width:150px}
.card img{width:144px;height:144px;image-rendering:pixelated}.plots img{max-width:100%;margin:4px}
.key{font-size:1.1em}.bad{color:#b00}
"""


# --- the page -------------------------------------------------------------------------------------


@dataclass
class ReportResult:
    """What ``write_report`` wrote, and the numbers it computed."""

    path: Path
    sections: list[str]
    shakeup: dict | None
    notes: list[str]
    seconds: float
    no_shakeup: str | None = None  # why there is no shake-up estimate, when there is none


_PAGE_START = '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>kit report: '


def _is_report_page(path: Path) -> bool:
    """Whether ``path`` is a page ``kit report`` wrote (what an --out may replace)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(_PAGE_START)) == _PAGE_START.encode()
    except OSError:
        return False


def check_out(out: Path, run: Path) -> None:
    """Refuse an --out that would replace anything but a page kit report wrote: a file of the run (see
    kit.runs.folder.RunFolder) or any other file; or a folder."""
    if out.is_dir():
        raise KitError(f"{out}: is a folder; --out names the HTML file to write")
    own = out.resolve() == RunFolder(run).report_json.resolve()
    if not own and (not out.exists() or _is_report_page(out)):
        return
    if own or run.resolve() in out.resolve().parents:
        raise KitError(f"{out}: is a file of the run {run}, not its report; write the page to another --out "
                       "(default RUN/report.html)")
    raise KitError(f"{out}: exists and is not a page kit report wrote; write the page to another --out")


def _test_records_of(data: RunData, given: str | os.PathLike | None) -> tuple[str | None, str | None]:
    """(test records folder, note): ``given`` (--test-records) as it is, else the run config's test_records
    (a stack's) when that folder is still there."""
    if given is not None:
        return str(given), None
    named = data.config.get("test_records")
    if not isinstance(named, str) or not named:
        return None, None
    if not (Path(named) / "manifest.json").is_file():
        return None, f"{named}: test records named by {runfolder.CONFIG} not found, so their size was not used"
    return named, None


def write_report(run: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 records: str | os.PathLike | None = None, public: int | None = None, private: int | None = None,
                 draws: int = 200, mistakes: int = 16, gradcam_per_kind: int = 6, with_gradcam: bool = True,
                 seed: int = 0, test_records: str | os.PathLike | None = None) -> ReportResult:
    """Write the HTML report of ``run`` (default RUN/report.html) and its numbers to RUN/report.json.

    The leaderboard sizes of the shake-up: see ``leaderboard_sizes`` (``test_records`` defaults to a stack's
    config's test_records)."""
    t0 = time.perf_counter()
    if mistakes < 1:
        raise KitError(f"--mistakes: expects at least 1, got {mistakes}")
    check_shakeup_settings(public, private, draws)
    run = Path(run)
    out = Path(out) if out else run / "report.html"
    if run.is_dir():
        check_out(out, run)
    data = load_run_data(run, records)
    notes = list(data.notes)
    tests, note = _test_records_of(data, test_records)
    notes += [note] if note else []
    sizes = leaderboard_sizes(data.manifest, public, private, tests)
    name = data.run.name
    model = data.config.get("model", "stack")
    title = f"kit report: {name}"
    fold_mean, overall = _score(data.cv, "fold_mean"), _score(data.cv, "overall")
    head = (f"<h1>{html.escape(title)}</h1><p class=\"key\">{html.escape(str(model))}"
            f"{', ' + str(data.config.get('size')) + ' px' if data.config.get('size') else ''}"
            f"{', ' + str(data.config.get('epochs')) + ' epochs' if data.config.get('epochs') else ''}; "
            f"{html.escape(data.metric)} {_text_score(fold_mean)} (mean of folds), {_text_score(overall)} pooled; "
            f"folder {html.escape(str(data.run))}; written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>")
    sections = [_cv_section(data), *_curves_sections(data)]
    shake, no_shakeup = None, None
    if data.oof is not None:
        sections.append(_class_sections(data))
        worst = worst_mistakes(data, mistakes)
        read = RecordsRead({}, {}, {})
        if data.records is not None:
            sample = _correct_sample(_with_predicted(data), gradcam_per_kind, seed)
            want = set(worst["image_name"]) | set(sample["image_name"])
            read = read_records(data.records, data.oof["fold"].unique(), want, data.config)
        sections.append(_mistakes_section(data, worst, read.images))
        sections.append(_patients_section(data, read.groups, worst))
        if with_gradcam:
            section, more = _gradcam_section(data, worst, read, gradcam_per_kind, seed)
            sections.append(section)
            notes += more
        else:
            sections.append(_section("gradcam", "Grad-CAM", _note("left out (--no-gradcam)")))
        if sizes is None:
            no_shakeup = NO_SIZES
            sections.append(_section("shakeup", "Shake-up estimate", _note(NO_SIZES)))
        else:
            pub, priv, source = sizes
            shake, samples = shakeup(data.oof["target"].to_numpy(int), data.pred_matrix(), data.metric, pub, priv,
                                     draws=draws, seed=seed)
            shake["source"] = source
            sections.append(_shakeup_section(data, shake, samples, source))
    importance = _importance_section(data.run, data.cv)
    if importance:
        sections.append(importance)
    sections += [_records_section(data), _config_section(data)]
    notes_html = "".join(_note(n) for n in notes)
    page = (f"{_PAGE_START}{html.escape(name)}</title>"
            f"<style>{_CSS}</style></head><body>{head}{notes_html}{''.join(sections)}</body></html>\n")
    fsutil.write_text(out, page)
    fsutil.write_json(RunFolder(data.run).report_json, {
        "page": str(out), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "shakeup": shake,
        "no_shakeup": no_shakeup})
    ids = [s.split('"', 2)[1] for s in sections]
    return ReportResult(out, ids, shake, notes, time.perf_counter() - t0, no_shakeup)


def _text_score(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def format_result(result: ReportResult) -> str:
    """Lines ``kit report`` prints: the shake-up in one line, notes, and the page written."""
    lines = []
    s = result.shakeup
    if s and "difference" in s:
        d = s["difference"]
        lines.append(f"shake-up ({s['public_size']:,} public / {s['private_size']:,} private images, {s['draws']} draws): "
                     f"private - public {s['metric']} {d['mean']:+.4f} +- {d['std']:.4f} (90% within "
                     f"{d['p05']:+.4f} .. {d['p95']:+.4f})")
    elif s:
        p = s["private"]
        lines.append(f"spread of {s['metric']} over {s['private_size']:,} test images: +- {p['std']:.4f}")
    elif result.no_shakeup:
        lines.append(result.no_shakeup)
    lines += [f"note: {n}" for n in result.notes]
    lines.append(f"report: {result.path} ({result.seconds:.1f} s)")
    return "\n".join(lines)

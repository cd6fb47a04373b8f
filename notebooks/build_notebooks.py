"""Write the kit notebooks (one per competition) with nbformat: `python notebooks/build_notebooks.py`.

Each notebook is thin: the kit install cell, its settings, then calls into kit (records, train,
predict) and a submission.csv in the working folder. On Kaggle it reads the attached inputs; locally
it reads KIT_INPUT (a competition download, e.g. one from kit.data.synth) and writes under KIT_WORKING;
KIT_TINY=1 shrinks everything to a seconds-long rehearsal (a tiny model from scratch, no weights). The
kernel settings `kit push` uses (title, slug, accelerator, competition, datasets, models) live in each
notebook's ``metadata.kit``. Each notebook trains the keras-hub EfficientNet B0 preset from the public
Kaggle Model PRETRAINED, found under /kaggle/input by kit.kaggle.kernel.pretrained_weights.

What differs between notebooks is the competition's: each registered competition with ``notebook`` parameters
(kit.data.competitions.NotebookParams: name, kernel title, inputs, image size, folds, epochs, batch, TTA, ...) gets
notebooks/<name>.ipynb, written by the standard template below, or by the template of that name in TEMPLATES
when its notebook is special (siim's public TFRecords, isic2024's code-competition submission).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kit.data import competitions  # noqa: E402
from kit.data.competitions import PRETRAINED, PRETRAINED_NAME, Competition, NotebookParams  # noqa: E402
from kit.kaggle.client import KERNELSPEC, install_cell  # noqa: E402
from kit.kaggle.kernel import SESSION_HOURS  # noqa: E402

md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell

# The rehearsal's shell commands, run from the kit checkout. Jupyter runs a notebook in the notebook's own
# folder, so the folders it reads and writes are given as absolute paths; `jupyter execute` keeps the
# executed notebook only when told where (--output, whose folder must exist).
REHEARSAL = (
    "python -c \"from kit.data import synth; synth.make_competition('{layout}', 'data/synth-{layout}')\"\n"
    "mkdir -p runs/{name}\n"
    "KIT_INPUT=\"$PWD/data/synth-{layout}\" KIT_WORKING=\"$PWD/runs/{name}\" KIT_TINY=1 \\\n"
    "  jupyter execute notebooks/{name}.ipynb --output=\"$PWD/runs/{name}/{name}.ipynb\"\n"
)

LOCAL_RUN = (
    "Locally, a rehearsal on a synthetic competition (`KIT_TINY=1`: a tiny model from scratch, no weights), "
    "from the kit checkout:\n\n"
    "```bash\n" + REHEARSAL + "```\n\n"
    "The executed notebook, every cell's output in place, is `runs/{name}/{name}.ipynb` (open it in Jupyter "
    "or VS Code); beside it is what the notebook wrote (`submission.csv`, the run folder). "
    "(`jupyter execute` comes from nbclient, installed with kit's dev tools by `make test`.)\n\n"
    "On Kaggle: `kit push notebooks/{name}.ipynb` (private, internet off, kit bundled in the install cell). The "
    "pretrained backbone, EfficientNet B0 with ImageNet weights (the keras-hub preset Keras publishes on "
    "Kaggle Models, `MODEL_SOURCE` below), is attached as a model input; the local rehearsal needs no weights."
)



def _setup(extra_imports: str = "", cli_imports: str = "") -> str:
    lines = [
        "import os",
        "import time",
        "",
        "from kit.data import records",
        "from kit.cli import run_kit" + cli_imports,
        "from kit.kaggle.kernel import find_input, fold_args, locate, notebook_paths, pretrained_weights" + extra_imports,
        "",
        "STARTED = time.time()  # the session's clock: training stops before Kaggle's limit (kit train --time-limit)",
        "paths = notebook_paths()  # /kaggle/input, /kaggle/working on Kaggle; KIT_INPUT, KIT_WORKING locally",
        "TINY = os.environ.get('KIT_TINY') == '1'  # a seconds-long rehearsal: tiny model, 32 px, one epoch",
        "print(paths, 'tiny' if TINY else 'full')",
    ]
    return "\n".join(lines)


def _intro(nb: NotebookParams, layout: str) -> str:
    """The first markdown cell: the competition's own text, then how to rehearse and push the notebook."""
    return nb.intro + "\n\n" + LOCAL_RUN.format(layout=layout, name=nb.name)


def _input_line(nb: NotebookParams) -> str:
    """COMPETITION = '...' or DATASET = '...': the Kaggle input the download is read from."""
    setting, slug = nb.source
    return f"{setting} = {slug!r}"


def _settings(nb: NotebookParams, input_line: str, extra: str = "") -> str:
    source = nb.models[0]
    return "\n".join([
        input_line,
        f"# pretrained backbone, a public Kaggle Model (kit push attaches it): "
        f"{PRETRAINED_NAME if source == PRETRAINED else source}",
        f"MODEL_SOURCE = {source!r}",
        f"MODEL, SIZE, FOLDS, EPOCHS, BATCH, TTA = {nb.model!r}, {nb.size}, {nb.folds}, {nb.epochs}, {nb.batch}, "
        f"{nb.tta}",
        *([extra] if extra else []),
        "if TINY:",
        "    MODEL, SIZE, FOLDS, EPOCHS, BATCH, TTA = 'tiny_cnn', 32, 2, 1, 8, 2",
        "# the attached model's folder; its kaggle:// handle (a download) only when online; else it stops here",
        "WEIGHTS = '' if TINY else pretrained_weights(MODEL_SOURCE, paths)",
    ])


TRAIN = """RUN = paths.working / 'run'  # config, fold models, oof.csv, cv.json, plots: kept as kernel output
# after `kit push --resume-from KERNEL`: the run in that kernel's output, copied here to go on with
RESUME = previous_run(RUN, paths)
# Kaggle ends a {accelerator} session after {hours:g} hours: training stops at an epoch boundary before that, less
# half an hour kept for what follows (predictions, the submission); the run is then resumable
# fold_args(): [] (every fold), or ['--folds', '0,1'] in a kernel of `kit push --fan-out`
run_kit('train', '--records', RECORDS, '--out', RUN, *fold_args(), '--model', MODEL, '--epochs', EPOCHS, '--batch', BATCH,
        *(['--weights', WEIGHTS] if WEIGHTS else []){augment}, '--time-limit', time_limit({hours:g}, STARTED),
        *(['--resume'] if RESUME else []))
STOPPED = (RUN / 'stopped.json').is_file()  # the time limit came first: `kit push --resume-from` this kernel
if STOPPED:
    print('training stopped before the session limit; the cells below wait for the resumed run')"""

RESULT = """import json

import pandas as pd

if not STOPPED:
    print(json.loads((RUN / 'cv.json').read_text()))
# the cell's result: the submission's head, or why there is none yet
pd.read_csv(SUBMISSION).head() if not STOPPED else 'stopped by the time limit: no submission yet'"""

def _unless_stopped(source: str) -> str:
    """``source`` run only when training finished (not stopped by the time limit)."""
    return "if not STOPPED:\n" + "\n".join(("    " + ln) if ln else "" for ln in source.splitlines())


def _train(comp: Competition) -> str:
    """The training cell: within the accelerator's Kaggle session, with the competition's augmentation preset."""
    accelerator = comp.notebook.accelerator
    augment = "" if comp.augment == "default" else f", '--augment', {comp.augment!r}"
    return TRAIN.format(augment=augment, hours=SESSION_HOURS[accelerator],
                        accelerator="TPU" if accelerator == "tpu" else "GPU")


def _records(layout: str, test: bool = True) -> str:
    lines = [
        "RECORDS, TEST_RECORDS = paths.scratch / 'records', paths.scratch / 'records-test'",
        f"manifest = records.write_from_source(SOURCE, RECORDS, layout={layout!r}, n_folds=FOLDS, size=SIZE)",
        "print(records.format_summary(manifest))",
    ]
    if test:
        lines += [
            f"manifest = records.write_from_source(SOURCE, TEST_RECORDS, layout={layout!r}, size=SIZE, test=True)",
            "print(records.format_summary(manifest))",
        ]
    return "\n".join(lines)


def _predict(sample: bool) -> str:
    lines = [
        "SUBMISSION = paths.working / 'submission.csv'",
        "run_kit('predict', '--run', RUN, '--records', TEST_RECORDS, '--out', SUBMISSION, '--tta', TTA" +
        (",\n        '--sample-submission', SOURCE / 'sample_submission.csv')" if sample else ")"),
    ]
    if sample:
        lines.append("run_kit('check', SUBMISSION, '--sample-submission', SOURCE / 'sample_submission.csv')")
    return "\n".join(lines)


def _source(nb: NotebookParams) -> str:
    """SOURCE: the download's file or folder under the attached input."""
    return f"SOURCE = locate(find_input({nb.source[0]}, paths), {nb.locate!r})"


# submission.csv of a download without a test split: the out-of-fold probabilities, one column per class
OOF_SUBMISSION = """import pandas as pd

from kit.ensemble import submission

SUBMISSION = paths.working / 'submission.csv'
oof = pd.read_csv(RUN / 'oof.csv')
classes = list(records.read_manifest(RECORDS).classes)
probs = oof[[f'pred_{c}' for c in classes]].to_numpy()
submission.make_submission(oof['image_name'], probs, classes, None, 'image_id').to_csv(SUBMISSION, index=False)"""


def _submission(nb: NotebookParams) -> str:
    """The cell that writes submission.csv, as ``nb.submission`` says."""
    return OOF_SUBMISSION if nb.submission == "oof" else _predict(sample=nb.submission == "sample")


def standard(comp: Competition) -> list:
    """A training notebook: records from the download, kit train, then submission.csv; from the parameters alone."""
    nb = comp.notebook
    return [
        md(_intro(nb, comp.name)),
        install_cell(),
        code(_setup(", previous_run, time_limit")),
        code(_settings(nb, _input_line(nb))),
        code(_source(nb) + "\n" + _records(comp.layout, test=nb.submission != "oof")),
        code(_train(comp)),
        code(_unless_stopped(_submission(nb))),
        code(RESULT),
    ]


def siim_isic_tpu(comp: Competition) -> list:
    """The standard notebook, training on the public TFRecords (its first dataset) on Kaggle."""
    nb = comp.notebook
    return [
        md(_intro(nb, comp.name)),
        install_cell(),
        code(_setup(", link_shards, previous_run, time_limit")),
        code(_settings(nb, f"{_input_line(nb)}\n"
                           f"PUBLIC_TFRECORDS = {nb.datasets[0]!r}  # train00-2182.tfrec ... test15-677.tfrec",
                       "USE_PUBLIC_TFRECORDS = paths.on_kaggle  # their size (256) must equal SIZE")),
        code(_source(nb) + "\n"
             "if USE_PUBLIC_TFRECORDS and not TINY:\n"
             "    public = find_input(PUBLIC_TFRECORDS, paths)\n"
             "    RECORDS = link_shards(public, paths.scratch / 'records', 'train')\n"
             "    TEST_RECORDS = link_shards(public, paths.scratch / 'records-test', 'test')\n"
             "else:\n" + "\n".join("    " + ln for ln in _records(comp.layout).splitlines())),
        code(_train(comp)),
        code(_unless_stopped(_submission(nb))),
        code(RESULT),
    ]


def isic2024_t4(comp: Competition) -> list:
    """The code-competition submission: predicts with a run attached as its first dataset, then kit stack."""
    nb = comp.notebook
    return [
        md(_intro(nb, comp.name)
           + " Locally (and with `KIT_TINY=1`) it first trains a tiny run on the synthetic download."),
        install_cell(),
        code(_setup(cli_imports=", isic2024_run")),
        code(f"{_input_line(nb)}\n"
             f"RUN_DATASET = {nb.datasets[0]!r}  # a `kit train` run folder, attached as a dataset\n"
             "BUDGET_H, MARGIN_H = 12.0, 1.0  # Kaggle's limit, and what is kept back for safety\n"
             f"SAMPLE, BATCH, TTA = 512, {nb.batch}, {nb.tta}\n"
             "if TINY:\n"
             "    SAMPLE, BATCH = 8, 4"),
        code("import time\n\n"
             "STARTED = time.time()\n"
             + _source(nb) + "\n"
             "# Kaggle: the attached run; locally: a tiny run trained here on the synthetic download\n"
             "RUN = isic2024_run(RUN_DATASET, SOURCE, paths, tiny=TINY)"),
        code("from kit.ensemble import predict\n\n"
             "estimate = predict.estimate_time(RUN, SOURCE, sample=SAMPLE, tta=TTA, batch=BATCH)\n"
             "left_s = (BUDGET_H - MARGIN_H) * 3600 - (time.time() - STARTED)\n"
             "print(estimate.describe(left_s))\n"
             "if not estimate.fits(left_s):\n"
             "    raise SystemExit('stopping: the rerun would not finish in time; lower TTA, use fewer folds or a '\n"
             "                     'smaller backbone')"),
        code("IMAGE_SUBMISSION = paths.working / 'image_submission.csv'  # the image model's own predictions\n"
             "run_kit('predict', '--run', RUN, '--records', SOURCE, '--out', IMAGE_SUBMISSION, '--tta', TTA,\n"
             "        '--batch', BATCH, '--sample-submission', SOURCE / 'sample_submission.csv')"),
        md("## The second stage: `kit stack`\n\n"
           "Gradient-boosted trees on the metadata, the image model's out-of-fold predictions and features "
           "relative to each patient, on the run's own folds: how ISIC 2024 was won. The train split's "
           "metadata and folds come from small records written here: the same download, seed and fold count "
           "give the run's folds again, and `kit stack` refuses a run whose folds differ."),
        code("import pandas as pd\n\n"
             "META = paths.scratch / 'meta-records'\n"
             "N_FOLDS = int(pd.read_csv(RUN / 'oof.csv', usecols=['fold'])['fold'].nunique())\n"
             "run_kit('records', SOURCE, '--out', META, '--size', 32, '--folds', N_FOLDS)\n"
             "SUBMISSION = paths.working / 'submission.csv'\n"
             "run_kit('stack', '--records', META, '--runs', RUN, '--out', paths.working / 'stack', '--test-records', SOURCE,\n"
             "        '--predictions', IMAGE_SUBMISSION, '--sample-submission', SOURCE / 'sample_submission.csv',\n"
             "        '--submission', SUBMISSION, '--drop', 'image_type')\n"
             "run_kit('check', SUBMISSION, '--sample-submission', SOURCE / 'sample_submission.csv')"),
        code("import json\n\n"
             "print(json.loads((paths.working / 'stack' / 'cv.json').read_text()))\n"
             "pd.read_csv(SUBMISSION).head()"),
    ]


# The notebooks with a template of their own; every other competition's notebook is the standard one.
TEMPLATES = {"siim_isic_tpu": siim_isic_tpu, "isic2024_t4": isic2024_t4}


def notebooks() -> dict[str, Competition]:
    """The registered competitions that have a notebook, by notebook name, in registration order."""
    return {c.notebook.name: c for c in map(competitions.get, competitions.names()) if c.notebook is not None}


NOTEBOOKS = notebooks()  # the built-in competitions' notebooks


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as nbformat builds it (cell ids derived from the name: stable diffs)."""
    comp = notebooks()[name]
    nb = nbformat.v4.new_notebook(cells=TEMPLATES.get(name, standard)(comp))
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name.replace('_', '-')}-{i}"
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"},
                   "kit": comp.notebook.kernel()}
    nbformat.validate(nb)
    return nb


def main() -> None:
    for name in notebooks():
        path = HERE / f"{name}.ipynb"
        nbformat.write(build(name), str(path))
        print(path)


if __name__ == "__main__":
    main()

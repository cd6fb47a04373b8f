"""Write the kit notebooks (one per competition) with nbformat: `python notebooks/build_notebooks.py`.

Each notebook is thin: the kit install cell, its settings, then calls into kit (records, train,
predict) and a submission.csv in the working folder. On Kaggle it reads the attached inputs; locally
it reads KIT_INPUT (a competition download, e.g. one from kit.synth) and writes under KIT_WORKING;
KIT_TINY=1 shrinks everything to a seconds-long rehearsal (a tiny model from scratch, no weights). The
kernel settings `kit push` uses (title, slug, accelerator, competition, datasets, models) live in each
notebook's ``metadata.kit``. Each notebook trains the keras-hub EfficientNet B0 preset from the public
Kaggle Model PRETRAINED, found under /kaggle/input by kit.kernel.pretrained_weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kit.kaggle import KERNELSPEC, install_cell  # noqa: E402
from kit.kernel import SESSION_HOURS  # noqa: E402

md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell

# The rehearsal's shell commands, run from the kit checkout. Jupyter runs a notebook in the notebook's own
# folder, so the folders it reads and writes are given as absolute paths; `jupyter execute` keeps the
# executed notebook only when told where (--output, whose folder must exist).
REHEARSAL = (
    "python -c \"from kit import synth; synth.make_competition('{layout}', 'data/synth-{layout}')\"\n"
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


# Every notebook's pretrained backbone: the keras-hub EfficientNet B0 preset that Keras publishes as a
# public Kaggle Model (owner/model/framework/variation/version; kit push attaches it).
PRETRAINED = "keras/efficientnet/keras/efficientnet_b0_ra_imagenet/2"
PRETRAINED_NAME = "EfficientNet B0, ImageNet-1k (RandAugment), the keras-hub preset by Keras"


def _setup(extra_imports: str = "") -> str:
    lines = [
        "import os",
        "import time",
        "",
        "from kit import records",
        "from kit.kernel import find_input, fold_args, locate, notebook_paths, pretrained_weights, run_kit" + extra_imports,
        "",
        "STARTED = time.time()  # the session's clock: training stops before Kaggle's limit (kit train --time-limit)",
        "paths = notebook_paths()  # /kaggle/input, /kaggle/working on Kaggle; KIT_INPUT, KIT_WORKING locally",
        "TINY = os.environ.get('KIT_TINY') == '1'  # a seconds-long rehearsal: tiny model, 32 px, one epoch",
        "print(paths, 'tiny' if TINY else 'full')",
    ]
    return "\n".join(lines)


def _settings(input_line: str, size: int, folds: int, epochs: int, batch: int, tta: int, extra: str = "") -> str:
    return "\n".join([
        input_line,
        f"# pretrained backbone, a public Kaggle Model (kit push attaches it): {PRETRAINED_NAME}",
        f"MODEL_SOURCE = {PRETRAINED!r}",
        f"MODEL, SIZE, FOLDS, EPOCHS, BATCH, TTA = 'keras_hub', {size}, {folds}, {epochs}, {batch}, {tta}",
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
    display(pd.read_csv(SUBMISSION).head())"""

# What a training notebook's session may last on Kaggle
T4_HOURS, TPU_HOURS = SESSION_HOURS["t4"], SESSION_HOURS["tpu"]


def _unless_stopped(source: str) -> str:
    """``source`` run only when training finished (not stopped by the time limit)."""
    return "if not STOPPED:\n" + "\n".join(("    " + ln) if ln else "" for ln in source.splitlines())


def _train(hours: float, augment: str = "") -> str:
    return TRAIN.format(augment=augment, hours=hours, accelerator="TPU" if hours == TPU_HOURS else "GPU")


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


def siim_isic_tpu() -> tuple[list, dict]:
    name, layout = "siim_isic_tpu", "siim"
    cells = [
        md("# SIIM-ISIC Melanoma Classification on a TPU v5e-8\n\n"
           "Binary melanoma detection scored by ROC AUC. On Kaggle the notebook trains on the public "
           "SIIM-ISIC TFRecords (`cdeotte/melanoma-256x256`: folds already grouped by patient, fold = shard "
           "number); locally it writes kit's own records from the competition download.\n\n"
           "Kaggle's TPU VM ships tensorflow-cpu: `notebook_paths()` sees `ISTPUVM=1` and starts Keras on JAX, "
           "which trains over the 8 TPU cores (tf.data still feeds them from the host).\n\n"
           + LOCAL_RUN.format(layout=layout, name=name)),
        install_cell(),
        code(_setup(", link_shards, previous_run, time_limit")),
        code(_settings("COMPETITION = 'siim-isic-melanoma-classification'\n"
                       "PUBLIC_TFRECORDS = 'cdeotte/melanoma-256x256'  # train00-2182.tfrec ... test15-677.tfrec",
                       256, 5, 12, 32, 8,
                       "USE_PUBLIC_TFRECORDS = paths.on_kaggle  # their size (256) must equal SIZE")),
        code("SOURCE = locate(find_input(COMPETITION, paths), 'train.csv')\n"
             "if USE_PUBLIC_TFRECORDS and not TINY:\n"
             "    public = find_input(PUBLIC_TFRECORDS, paths)\n"
             "    RECORDS = link_shards(public, paths.scratch / 'records', 'train')\n"
             "    TEST_RECORDS = link_shards(public, paths.scratch / 'records-test', 'test')\n"
             "else:\n" + "\n".join("    " + ln for ln in _records(layout).splitlines())),
        code(_train(TPU_HOURS)),
        code(_unless_stopped(_predict(sample=True))),
        code(RESULT),
    ]
    meta = {"title": "SIIM-ISIC Melanoma TPU", "slug": "siim-isic-melanoma-tpu", "accelerator": "tpu",
            "competition": "siim-isic-melanoma-classification", "datasets": ["cdeotte/melanoma-256x256"],
            "models": [PRETRAINED]}
    return cells, meta


def ham10000_t4() -> tuple[list, dict]:
    name, layout = "ham10000_t4", "ham10000"
    cells = [
        md("# HAM10000 (skin-cancer-mnist) on two T4s\n\n"
           "Seven classes (akiec bcc bkl df mel nv vasc), scored by balanced accuracy as in ISIC 2018 "
           "task 3; folds are grouped by lesion. The dataset has no test split, so `submission.csv` holds "
           "the out-of-fold probabilities: one column per class, every image predicted by the fold model "
           "that never saw it.\n\n" + LOCAL_RUN.format(layout=layout, name=name)),
        install_cell(),
        code(_setup(", previous_run, time_limit")),
        code(_settings("DATASET = 'kmader/skin-cancer-mnist-ham10000'", 256, 5, 15, 32, 1)),
        code("SOURCE = locate(find_input(DATASET, paths), 'HAM10000_metadata.csv')\n" + _records(layout, test=False)),
        code(_train(T4_HOURS)),
        code(_unless_stopped("import pandas as pd\n\n"
                             "from kit import submission\n\n"
                             "SUBMISSION = paths.working / 'submission.csv'\n"
                             "oof = pd.read_csv(RUN / 'oof.csv')\n"
                             "classes = list(records.read_manifest(RECORDS).classes)\n"
                             "probs = oof[[f'pred_{c}' for c in classes]].to_numpy()\n"
                             "submission.make_submission(oof['image_name'], probs, classes, None, 'image_id')"
                             ".to_csv(SUBMISSION, index=False)")),
        code(RESULT),
    ]
    meta = {"title": "HAM10000 skin lesions T4", "slug": "ham10000-skin-lesions-t4", "accelerator": "t4",
            "datasets": ["kmader/skin-cancer-mnist-ham10000"], "models": [PRETRAINED]}
    return cells, meta


def pcam_t4() -> tuple[list, dict]:
    name, layout = "pcam_t4", "pcam"
    cells = [
        md("# Histopathologic Cancer Detection (PCam) on two T4s\n\n"
           "96x96 tiles, binary, scored by ROC AUC. The label concerns the centre 32x32 only, so the `pcam` "
           "augmentation preset keeps the centre in view.\n\n" + LOCAL_RUN.format(layout=layout, name=name)),
        install_cell(),
        code(_setup(", previous_run, time_limit")),
        code(_settings("COMPETITION = 'histopathologic-cancer-detection'", 96, 5, 10, 64, 8)),
        code("SOURCE = locate(find_input(COMPETITION, paths), 'train_labels.csv')\n" + _records(layout)),
        code(_train(T4_HOURS, ", '--augment', 'pcam'")),
        code(_unless_stopped(_predict(sample=True))),
        code(RESULT),
    ]
    meta = {"title": "Histopathologic Cancer Detection T4", "slug": "histopathologic-cancer-detection-t4",
            "accelerator": "t4", "competition": "histopathologic-cancer-detection", "models": [PRETRAINED]}
    return cells, meta


def isic9_t4() -> tuple[list, dict]:
    name, layout = "isic9_t4", "isic9"
    cells = [
        md("# Skin cancer ISIC, 9 classes, on two T4s\n\n"
           "Class folders (`Train/<class name>/`, `Test/<class name>/`; the names hold spaces). The test "
           "folder is labelled: `kit predict` scores it and writes one probability column per class.\n\n"
           + LOCAL_RUN.format(layout=layout, name=name)),
        install_cell(),
        code(_setup(", previous_run, time_limit")),
        code(_settings("DATASET = 'nodoubttome/skin-cancer9-classesisic'", 256, 5, 15, 32, 8)),
        code("SOURCE = locate(find_input(DATASET, paths), 'Train')\n" + _records("folders")),
        code(_train(T4_HOURS)),
        code(_unless_stopped(_predict(sample=False))),
        code(RESULT),
    ]
    meta = {"title": "Skin cancer ISIC 9 classes T4", "slug": "skin-cancer-isic-9-classes-t4", "accelerator": "t4",
            "datasets": ["nodoubttome/skin-cancer9-classesisic"], "models": [PRETRAINED]}
    return cells, meta


def melanoma10k_t4() -> tuple[list, dict]:
    name, layout = "melanoma10k_t4", "melanoma10k"
    cells = [
        md("# Melanoma 10k (benign / malignant) on two T4s\n\n"
           "Class folders `train/{Benign,Malignant}/` and a labelled `test/`: `kit predict` scores it "
           "(accuracy, AUC) and writes `id,target`.\n\n" + LOCAL_RUN.format(layout=layout, name=name)),
        install_cell(),
        code(_setup(", previous_run, time_limit")),
        code(_settings("DATASET = 'hasnainjaved/melanoma-skin-cancer-dataset-of-10000-images'",
                       256, 5, 10, 32, 8)),
        code("SOURCE = locate(find_input(DATASET, paths), 'train')\n" + _records("folders")),
        code(_train(T4_HOURS)),
        code(_unless_stopped(_predict(sample=False))),
        code(RESULT),
    ]
    meta = {"title": "Melanoma 10k benign malignant T4", "slug": "melanoma-10k-benign-malignant-t4",
            "accelerator": "t4", "datasets": ["hasnainjaved/melanoma-skin-cancer-dataset-of-10000-images"],
            "models": [PRETRAINED]}
    return cells, meta


def isic2024_t4() -> tuple[list, dict]:
    name, layout = "isic2024_t4", "isic2024"
    cells = [
        md("# ISIC 2024 (3D-TBP) on two T4s: the code-competition submission\n\n"
           "Binary, 0.1% positives, scored by the partial AUC above 80% true-positive rate. This is a code "
           "competition: Kaggle reruns this notebook offline on about 500,000 hidden test images, within 12 hours. "
           "The notebook trains nothing there: it predicts the test HDF5 straight from its file (no records "
           "written) with the fold models of a run you trained beforehand (`kit train ... --oversample 0.2 "
           "--epoch-positives 2 --meta`) and attached as a dataset, then stacks gradient-boosted trees on the "
           "metadata and those predictions (`kit stack`), writes `submission.csv` and checks it. "
           "Before the long part it times a sample and stops if the whole rerun would not fit.\n\n"
           + LOCAL_RUN.format(layout=layout, name=name)
           + " Locally (and with `KIT_TINY=1`) it first trains a tiny run on the synthetic download."),
        install_cell(),
        code(_setup(", isic2024_run")),
        code("COMPETITION = 'isic-2024-challenge'\n"
             "RUN_DATASET = 'you/isic2024-run'  # a `kit train` run folder, attached as a dataset\n"
             "BUDGET_H, MARGIN_H = 12.0, 1.0  # Kaggle's limit, and what is kept back for safety\n"
             "SAMPLE, BATCH, TTA = 512, 128, 1\n"
             "if TINY:\n"
             "    SAMPLE, BATCH = 8, 4"),
        code("import time\n\n"
             "STARTED = time.time()\n"
             "SOURCE = locate(find_input(COMPETITION, paths), 'test-metadata.csv')\n"
             "# Kaggle: the attached run; locally: a tiny run trained here on the synthetic download\n"
             "RUN = isic2024_run(RUN_DATASET, SOURCE, paths, tiny=TINY)"),
        code("from kit import predict\n\n"
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
    meta = {"title": "ISIC 2024 submission T4", "slug": "isic-2024-submission-t4", "accelerator": "t4",
            "competition": "isic-2024-challenge", "datasets": ["you/isic2024-run"]}
    return cells, meta


NOTEBOOKS = {f.__name__: f for f in (siim_isic_tpu, ham10000_t4, pcam_t4, isic9_t4, melanoma10k_t4, isic2024_t4)}
# The synthetic layout each notebook rehearses on (kit.synth.make_competition).
LAYOUTS = {"siim_isic_tpu": "siim", "ham10000_t4": "ham10000", "pcam_t4": "pcam", "isic9_t4": "isic9",
           "melanoma10k_t4": "melanoma10k", "isic2024_t4": "isic2024"}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as nbformat builds it (cell ids derived from the name: stable diffs)."""
    cells, meta = NOTEBOOKS[name]()
    nb = nbformat.v4.new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name.replace('_', '-')}-{i}"
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}, "kit": meta}
    nbformat.validate(nb)
    return nb


def main() -> None:
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        nbformat.write(build(name), str(path))
        print(path)


if __name__ == "__main__":
    main()

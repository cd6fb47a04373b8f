"""Old module paths (``kit.kernel``, ``kit.records``, ...) kept importable for one release, with a warning.

kit's modules moved into packages (see docs/architecture.md). Notebooks and scripts written against the flat
layout keep working: ``import kit.kernel`` gives ``kit.kaggle.kernel`` itself and warns once.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    'kit.augment': 'kit.training.augment',
    'kit.backbones': 'kit.training.backbones',
    'kit.blend': 'kit.ensemble.blend',
    'kit.blend_fit': 'kit.ensemble.blend_fit',
    'kit.blend_methods': 'kit.ensemble.blend_methods',
    'kit.blend_pairing': 'kit.ensemble.blend_pairing',
    'kit.builders': 'kit.training.builders',
    'kit.callbacks': 'kit.training.callbacks',
    'kit.cli_kaggle': 'kit.cli.kaggle_verbs',
    'kit.cli_results': 'kit.cli.result_verbs',
    'kit.competitions': 'kit.data.competitions',
    'kit.config': 'kit.training.config',
    'kit.credentials': 'kit.kaggle.credentials',
    'kit.defaults': 'kit.training.defaults',
    'kit.demo': 'kit.cli.demo',
    'kit.errors': 'kit.core.errors',
    'kit.fanout': 'kit.kaggle.fanout',
    'kit.fit_parts': 'kit.training.fit_parts',
    'kit.folds': 'kit.data.folds',
    'kit.fsutil': 'kit.core.fsutil',
    'kit.gather': 'kit.kaggle.gather',
    'kit.gradcam': 'kit.ensemble.gradcam',
    'kit.image_workers': 'kit.data.image_workers',
    'kit.imagestream': 'kit.data.imagestream',
    'kit.imaging': 'kit.data.imaging',
    'kit.kernel': 'kit.kaggle.kernel',
    'kit.kernel_deps': 'kit.kaggle.deps',
    'kit.kernel_folder': 'kit.kaggle.kernel_folder',
    'kit.lr_find': 'kit.training.lr_find',
    'kit.manifest': 'kit.data.manifest',
    'kit.metrics': 'kit.core.metrics',
    'kit.models': 'kit.training.models',
    'kit.pipeline': 'kit.training.pipeline',
    'kit.plots': 'kit.runs.plots',
    'kit.precheck': 'kit.data.precheck',
    'kit.predict': 'kit.ensemble.predict',
    'kit.record_readers': 'kit.data.record_readers',
    'kit.record_schema': 'kit.data.record_schema',
    'kit.records': 'kit.data.records',
    'kit.report': 'kit.ensemble.report',
    'kit.report_data': 'kit.ensemble.report_data',
    'kit.report_html': 'kit.ensemble.report_html',
    'kit.report_sections': 'kit.ensemble.report_sections',
    'kit.report_shakeup': 'kit.ensemble.report_shakeup',
    'kit.resolve': 'kit.training.resolve',
    'kit.runfolder': 'kit.runs.folder',
    'kit.runtime': 'kit.core.runtime',
    'kit.schedule': 'kit.training.schedule',
    'kit.sources': 'kit.data.sources',
    'kit.stack': 'kit.ensemble.stack',
    'kit.stack_config': 'kit.ensemble.stack_config',
    'kit.stack_features': 'kit.ensemble.stack_features',
    'kit.stack_runs': 'kit.ensemble.stack_runs',
    'kit.stack_trees': 'kit.ensemble.stack_trees',
    'kit.strategy': 'kit.training.strategy',
    'kit.submission': 'kit.ensemble.submission',
    'kit.submission_read': 'kit.ensemble.submission_read',
    'kit.synth': 'kit.data.synth',
    'kit.task': 'kit.core.task',
    'kit.train': 'kit.training.train',
    'kit.weights': 'kit.training.weights',
}


# names an old module held that now live elsewhere: the notebooks' run_kit drives the command line, so it moved to
# kit.cli (kit.kaggle.kernel, below the CLI, never imports it)
MOVED_NAMES = {"kit.kernel": {"run_kit": "kit.cli", "isic2024_run": "kit.cli"}}


class _Forward(ModuleType):
    """An old module path whose names now live in several modules: each attribute looked up where it lives."""

    def __init__(self, name: str, new: str, names: dict[str, str]) -> None:
        super().__init__(name)
        self._new, self._names = new, names

    def __getattr__(self, attr: str) -> object:
        return getattr(importlib.import_module(self._names.get(attr, self._new)), attr)


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new}; the old name goes in the next release",
                      DeprecationWarning, stacklevel=3)
        if spec.name in MOVED_NAMES:
            return _Forward(spec.name, self.new, MOVED_NAMES[spec.name])
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """The module was executed under its new name."""


class OldNames(importlib.abc.MetaPathFinder):
    """Finds ``kit.<old name>`` and hands back the module at its new path."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        new = MOVED.get(fullname)
        return importlib.machinery.ModuleSpec(fullname, _Alias(new)) if new else None


def install() -> None:
    """Make the old names importable (once per process)."""
    if not any(isinstance(f, OldNames) for f in sys.meta_path):
        sys.meta_path.append(OldNames())

"""kit.training.config: TOML round trip, checked keys and types, flags over file in `kit train`."""

from __future__ import annotations

import dataclasses
import os

import pytest

from kit.training.config import Config
from kit.core.errors import KitError


def test_toml_round_trip_keeps_every_field(tmp_path):
    cfg = Config(records="r", out="o", folds=(0, 2), model="tiny_cnn", size=64, augment="pcam",
                 augment_options={"hue": 0.0, "hflip": False}, classes=("a", "b c"), meta_categorical={"sex": 2})
    path = cfg.save(tmp_path / "config.toml")
    back = Config.load(path)
    assert back == cfg
    assert back.folds == (0, 2) and back.classes == ("a", "b c")
    assert 'augment = "pcam"' in path.read_text()


def test_file_values_flags_override_and_train_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nmodel = "tiny_cnn"\nepochs = 3\nlr_max = 1\n')
    cfg = Config.load(path, epochs=7, batch=None)
    assert (cfg.model, cfg.epochs, cfg.batch, cfg.lr_max) == ("tiny_cnn", 7, Config().batch, 1.0)
    assert isinstance(cfg.lr_max, float)


def test_unknown_key_and_wrong_type_name_the_setting(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('epoch = 3\n')
    with pytest.raises(KitError, match=r"c.toml: unknown setting 'epoch'"):
        Config.load(path)
    with pytest.raises(KitError, match=r"setting 'epochs' expects int, got '3'"):
        Config.from_dict({"epochs": "3"})
    path.write_text('epochs = [\n')
    with pytest.raises(KitError, match="not valid TOML"):
        Config.load(path)
    with pytest.raises(KitError, match="config file not found"):
        Config.load(tmp_path / "absent.toml")


@pytest.mark.parametrize("smoke_env", ["", "1"])
def test_cli_flags_reach_the_config(tmp_path, monkeypatch, smoke_env):
    from kit.cli import app as cli

    seen = {}
    monkeypatch.setenv("KIT_SMOKE", smoke_env)

    class FakeTrain:  # the handler's only job is to turn flags + file into a Config
        @staticmethod
        def train_folds(cfg, resume=False, given=(), deadline=None, smoke=False):
            seen["cfg"], seen["resume"], seen["given"], seen["deadline"] = cfg, resume, given, deadline
            seen["smoke"] = smoke
            return __import__("types").SimpleNamespace(stopped=None)

        @staticmethod
        def format_result(result):
            return "done"

    import kit.training

    monkeypatch.setitem(__import__("sys").modules, "kit.training.train", FakeTrain)
    monkeypatch.setattr(kit.training, "train", FakeTrain, raising=False)
    (tmp_path / "c.toml").write_text('model = "tiny_cnn"\nepochs = 3\naugment = "pcam"\n')
    records, out = tmp_path / "R", tmp_path / "O"
    records.mkdir()
    (records / "manifest.json").write_text("{}")  # kit train checks the folder before it imports TensorFlow
    code = cli.main(["train", "--records", str(records), "--out", str(out), "--config", str(tmp_path / "c.toml"),
                     "--epochs", "5", "--folds", "0,1", "--meta", "--resume"])
    assert code == 0
    cfg = seen["cfg"]
    assert (cfg.records, cfg.out, cfg.model, cfg.epochs, cfg.augment, cfg.folds, cfg.meta) == \
        (str(records), str(out), "tiny_cnn", 5, "pcam", (0, 1), True)
    assert seen["resume"] is True and seen["deadline"] is None  # no --time-limit, no deadline
    assert set(seen["given"]) == {"records", "out", "epochs", "folds", "meta"}
    assert seen["smoke"] is (smoke_env == "1")  # KIT_SMOKE is read by the command and handed down as smoke=


def _cli_choices() -> dict[tuple[str, str], list]:
    """(verb, option) -> the values every `kit` option with choices= accepts, read from the parser itself."""
    import argparse

    from kit.cli.app import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {(verb, action.dest): list(action.choices)
            for verb, parser in verbs.choices.items() for action in parser._actions if action.choices is not None}


def test_every_cli_choice_list_is_a_table_declared_once():
    from kit.data import competitions, imaging
    from kit.runs import listing as runs
    from kit.training.config import BLEND_METHODS, CHOICES

    declared = {("train", name): list(values) for name, values in CHOICES.items()}
    declared.update({
        ("records", "layout"): ["auto", *competitions.layouts()],
        ("records", "resize"): list(imaging.RESIZE_POLICIES),
        ("blend", "method"): list(BLEND_METHODS),
        ("runs", "sort"): list(runs.SORT_KEYS),
        ("push", "accelerator"): ["t4", "tpu", "cpu"],  # checked against kit.kaggle.client below
    })
    assert _cli_choices() == declared  # a new choices= list fails here until its table is declared and listed above


def test_the_tables_are_the_ones_the_library_checks():
    from kit.ensemble import blend
    from kit.kaggle import client as kaggle
    from kit.training import strategy
    from kit.training.config import BLEND_METHODS, CHOICES

    assert blend.METHODS is BLEND_METHODS
    assert CHOICES["strategy"] is strategy.KINDS
    assert _cli_choices()[("push", "accelerator")] == list(kaggle.ACCELERATORS)
    for name, values in CHOICES.items():
        for value in values:
            Config.from_dict({name: value}).check_choices()


@pytest.mark.parametrize("name", ["augment_on", "lr_per", "class_weight", "loss", "strategy", "verbose"])
def test_a_value_outside_its_table_in_a_toml_file_is_one_line_naming_the_setting(tmp_path, capsys, name):
    from kit.cli import app as cli
    from kit.training.config import CHOICES, one_of

    bad = 7 if name == "verbose" else "bogus"
    (tmp_path / "c.toml").write_text(f"{name} = {bad!r}\n".replace("'", '"'))
    code = cli.main(["train", "--records", str(tmp_path / "R"), "--out", str(tmp_path / "O"),
                     "--config", str(tmp_path / "c.toml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [f"kit train: error: {name}: expects {one_of(CHOICES[name])}, got {bad!r}"]
    assert not (tmp_path / "O").exists()


def _train_parser():
    import argparse

    from kit.cli.app import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return verbs.choices["train"]


def test_every_train_flag_is_one_declared_setting_and_every_flagged_setting_one_flag():
    import dataclasses

    from kit.training.config import declaration, train_flags

    verb_only = {"help", "config", "resume", "time_limit", "find_lr"}  # how to run, not what to train: not Config settings
    parsed = [a.dest for a in _train_parser()._actions if a.dest not in verb_only]
    declared = [f.name for f in dataclasses.fields(Config) if declaration(f).flag and not declaration(f).resolved]
    assert sorted(parsed) == sorted(declared) == sorted(f.dest for f in train_flags())
    assert len(parsed) == len(set(parsed)) == 26
    assert not set(Config.resolved_names()) & set(parsed)  # what the records decide is never a flag
    assert set(Config.requested_names()) | set(Config.resolved_names()) == {f.name for f in dataclasses.fields(Config)}


def test_the_help_is_generated_from_the_declarations():
    helps = {a.dest: a.help for a in _train_parser()._actions}
    assert helps["batch"] == "batch size per replica (default 32)"
    assert helps["epochs"] == "epochs per fold (default 10 with --weights, 15 from scratch)"
    assert helps["folds"] == "folds to train, e.g. 0,1,2 (default: every fold in the records)"
    assert helps["records"] == "folder written by `kit records`"  # required: no default to state
    choices = {a.dest: a.choices for a in _train_parser()._actions if a.choices}
    assert choices["loss"] == ("auto", "bce", "cce", "focal") and choices["verbose"] == (0, 1, 2)


def test_adding_a_setting_is_one_declaration():
    import argparse

    from kit.training.config import CHOICES, check_choice, setting, train_flags

    @dataclasses.dataclass(frozen=True)
    class Wider(Config):
        mixup: float = setting(0.0, help="mixup's alpha; 0 off")
        sampler: str = setting("plain", choices=("plain", "balanced"), help="how batches are drawn")

    flags = {f.dest: f for f in train_flags(Wider)}
    assert set(flags) - {f.dest for f in train_flags()} == {"mixup", "sampler"}
    parser = argparse.ArgumentParser()
    for flag in flags.values():
        parser.add_argument(*flag.names, **flag.options)
    args = parser.parse_args(["--records", "R", "--out", "O", "--mixup", "0.4", "--sampler", "balanced"])
    cfg = Wider.from_dict({k: v for k, v in vars(args).items() if v is not None})
    assert (cfg.mixup, cfg.sampler) == (0.4, "balanced")
    assert flags["mixup"].options["help"] == "mixup's alpha; 0 off (default 0)"
    with pytest.raises(KitError, match=r"^sampler: expects plain or balanced, got 'odd'$"):
        Wider(sampler="odd").check_choices()
    assert "sampler" not in CHOICES  # the subclass's declaration stays its own
    check_choice("loss", "focal")


def test_import_kit_changes_no_environment_variable():
    import subprocess
    import sys

    code = ("import os; before = dict(os.environ); import kit, kit.training.config, kit.data.records, kit.cli.app; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_smoke_is_read_from_the_environment_given_only():
    from kit.training.config import smoke_requested

    assert [smoke_requested(e) for e in ({}, {"KIT_SMOKE": "0"}, {"KIT_SMOKE": ""}, {"KIT_SMOKE": "1"})] == \
        [False, False, False, True]

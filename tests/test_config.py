"""kit.config: TOML round trip, checked keys and types, flags over file in `kit train`."""

from __future__ import annotations

import pytest

from kit.config import Config
from kit.errors import KitError


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


def test_cli_flags_reach_the_config(tmp_path, monkeypatch):
    from kit import cli

    seen = {}

    class FakeTrain:  # the handler's only job is to turn flags + file into a Config
        @staticmethod
        def train_folds(cfg, resume=False, given=(), deadline=None):
            seen["cfg"], seen["resume"], seen["given"], seen["deadline"] = cfg, resume, given, deadline
            return __import__("types").SimpleNamespace(stopped=None)

        @staticmethod
        def format_result(result):
            return "done"

    import kit

    monkeypatch.setitem(__import__("sys").modules, "kit.train", FakeTrain)
    monkeypatch.setattr(kit, "train", FakeTrain, raising=False)
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


def _cli_choices() -> dict[tuple[str, str], list]:
    """(verb, option) -> the values every `kit` option with choices= accepts, read from the parser itself."""
    import argparse

    from kit.cli import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {(verb, action.dest): list(action.choices)
            for verb, parser in verbs.choices.items() for action in parser._actions if action.choices is not None}


def test_every_cli_choice_list_is_a_table_declared_once():
    from kit import competitions, imaging, runs
    from kit.config import BLEND_METHODS, CHOICES

    declared = {("train", name): list(values) for name, values in CHOICES.items()}
    declared.update({
        ("records", "layout"): ["auto", *competitions.layouts()],
        ("records", "resize"): list(imaging.RESIZE_POLICIES),
        ("blend", "method"): list(BLEND_METHODS),
        ("runs", "sort"): list(runs.SORT_KEYS),
        ("push", "accelerator"): ["t4", "tpu", "cpu"],  # checked against kit.kaggle below
    })
    assert _cli_choices() == declared  # a new choices= list fails here until its table is declared and listed above


def test_the_tables_are_the_ones_the_library_checks():
    from kit import blend, kaggle, strategy
    from kit.config import BLEND_METHODS, CHOICES

    assert blend.METHODS is BLEND_METHODS
    assert CHOICES["strategy"] is strategy.KINDS
    assert _cli_choices()[("push", "accelerator")] == list(kaggle.ACCELERATORS)
    for name, values in CHOICES.items():
        for value in values:
            Config.from_dict({name: value}).check_choices()


@pytest.mark.parametrize("name", ["augment_on", "lr_per", "class_weight", "loss", "strategy", "verbose"])
def test_a_value_outside_its_table_in_a_toml_file_is_one_line_naming_the_setting(tmp_path, capsys, name):
    from kit import cli
    from kit.config import CHOICES, one_of

    bad = 7 if name == "verbose" else "bogus"
    (tmp_path / "c.toml").write_text(f"{name} = {bad!r}\n".replace("'", '"'))
    code = cli.main(["train", "--records", str(tmp_path / "R"), "--out", str(tmp_path / "O"),
                     "--config", str(tmp_path / "c.toml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [f"kit train: error: {name}: expects {one_of(CHOICES[name])}, got {bad!r}"]
    assert not (tmp_path / "O").exists()

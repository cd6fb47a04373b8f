"""Shard names carry counts; one schema writes and parses."""

import pytest
import tensorflow as tf

from kit.data import records


def test_shard_name_round_trip_and_count():
    names = [records.shard_name("train", i, n) for i, n in enumerate([412, 7, 1000])]
    assert names[0] == "train00-412.tfrec"
    assert records.parse_shard_name(names[2]) == ("train", 2, 1000)
    assert records.count_data_items(names) == 1419


def test_public_siim_shard_names_count():
    assert records.count_data_items(["train00-2182.tfrec", "train01-2185.tfrec"]) == 4367


def test_bad_shard_name_is_refused():
    with pytest.raises(ValueError, match="notashard.tfrec"):
        records.parse_shard_name("notashard.tfrec")


def test_example_round_trip_with_metadata():
    jpeg = tf.io.encode_jpeg(tf.zeros([4, 4, 3], tf.uint8)).numpy()
    blob = records.to_example(jpeg, "ISIC_0052060", target=1, fold=3, group="IP_1", numeric={"age": 45.0},
                              categorical={"sex": 1})
    parsed = tf.io.parse_single_example(blob, records.feature_spec(["age"], ["sex"]))
    assert parsed["image_name"].numpy() == b"ISIC_0052060"
    assert int(parsed["target"]) == 1 and int(parsed["fold"]) == 3
    assert parsed["group"].numpy() == b"IP_1"
    assert float(parsed["age"]) == 45.0 and int(parsed["sex"]) == 1
    assert records.decode_image(parsed["image"]).shape == (4, 4, 3)

"""kit.training.schedule: values against the hand formula, per-step vs per-epoch, config round trip, PNG."""

import keras
import numpy as np
import pytest

from kit.core.errors import KitError
from kit.training.schedule import RampExpDecay, ScheduleArgumentError, plot_schedule, ramp_exp_decay

KW = dict(lr_start=1e-5, lr_max=4e-4, lr_min=1e-6, ramp_epochs=5, sustain_epochs=2, decay=0.8)
SPE = 10


def _lr(sched, step):
    return float(keras.ops.convert_to_numpy(sched(step)))


def test_per_epoch_values_match_hand_formula():
    assert ramp_exp_decay(0, **KW) == pytest.approx(1e-5)
    assert ramp_exp_decay(2, **KW) == pytest.approx(1e-5 + (4e-4 - 1e-5) * 2 / 5)
    assert ramp_exp_decay(5, **KW) == pytest.approx(4e-4)  # end of ramp = start of sustain
    assert ramp_exp_decay(6, **KW) == pytest.approx(4e-4)
    assert ramp_exp_decay(7, **KW) == pytest.approx(4e-4)  # first decay epoch: decay ** 0
    assert ramp_exp_decay(10, **KW) == pytest.approx((4e-4 - 1e-6) * 0.8 ** 3 + 1e-6)
    assert ramp_exp_decay(500, **KW) == pytest.approx(1e-6)


def test_per_step_values_match_hand_formula():
    s = RampExpDecay(**KW, steps_per_epoch=SPE)
    assert _lr(s, 0) == pytest.approx(1e-5, rel=1e-6)
    assert _lr(s, 25) == pytest.approx(1e-5 + (4e-4 - 1e-5) * 2.5 / 5, rel=1e-6)  # mid-ramp
    assert _lr(s, 5 * SPE) == pytest.approx(4e-4, rel=1e-6)
    assert _lr(s, 6 * SPE + 3) == pytest.approx(4e-4, rel=1e-6)  # sustain
    assert _lr(s, 8 * SPE + 5) == pytest.approx((4e-4 - 1e-6) * 0.8 ** 1.5 + 1e-6, rel=1e-5)


def test_per_step_equals_per_epoch_at_boundaries():
    s = RampExpDecay(**KW, steps_per_epoch=SPE)
    got = [_lr(s, e * SPE) for e in range(30)]
    np.testing.assert_allclose(got, [ramp_exp_decay(e, **KW) for e in range(30)], rtol=1e-5)


def test_no_ramp_no_sustain():
    kw = dict(KW, ramp_epochs=0, sustain_epochs=0)
    s = RampExpDecay(**kw, steps_per_epoch=4)
    assert _lr(s, 0) == pytest.approx(4e-4, rel=1e-6)
    assert ramp_exp_decay(0, **kw) == pytest.approx(4e-4)
    assert _lr(s, 8) == pytest.approx((4e-4 - 1e-6) * 0.64 + 1e-6, rel=1e-5)


def test_config_round_trip_and_registered():
    s = RampExpDecay(**KW, steps_per_epoch=SPE)
    s2 = RampExpDecay.from_config(s.get_config())
    assert s2.get_config() == s.get_config()
    assert s.get_config()["steps_per_epoch"] == SPE
    back = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert isinstance(back, RampExpDecay)
    assert _lr(back, 73) == pytest.approx(_lr(s, 73))
    assert keras.saving.get_registered_name(RampExpDecay) == "kit>RampExpDecay"
    opt = keras.optimizers.Adam(learning_rate=s)
    opt2 = keras.optimizers.Adam.from_config(opt.get_config())
    assert isinstance(opt2._learning_rate, RampExpDecay)


@pytest.mark.parametrize("arg,value,msg", [
    ("decay", 1.5, "Argument `decay` must be in (0, 1]. Received: decay=1.5"),
    ("lr_max", 0.0, "Argument `lr_max` must be > 0. Received: lr_max=0.0"),
    ("ramp_epochs", -1, "Argument `ramp_epochs` must be >= 0. Received: ramp_epochs=-1"),
    ("lr_min", 1.0, "Argument `lr_min` must be >= 0 and <= lr_max (0.0004). Received: lr_min=1.0"),
    ("steps_per_epoch", 0, "Argument `steps_per_epoch` must be an integer >= 1. Received: steps_per_epoch=0"),
])
def test_bad_arguments_echo_the_value(arg, value, msg):
    kw = {**KW, "steps_per_epoch": SPE, arg: value}
    with pytest.raises(ScheduleArgumentError) as info:
        RampExpDecay(**kw)
    assert str(info.value) == msg
    assert isinstance(info.value, KitError) and isinstance(info.value, ValueError)


def test_plot_schedule_writes_png(tmp_path):
    out = plot_schedule(tmp_path / "plots" / "lr.png", epochs=12, **KW, steps_per_epoch=SPE)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in out.parent.iterdir()] == ["lr.png"]  # no temporary left behind

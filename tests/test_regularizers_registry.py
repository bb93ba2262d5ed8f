"""Registry, spec parsing, schedules, light import."""

import subprocess
import sys

import pytest
import torch

import geo.regularizers as R
from geo.regularizers import REGULARIZERS, Schedule, build, parse_regularizer_spec, parse_regularizers


def test_parse_regularizers_builds_weighted_modules():
    tv, corr = parse_regularizers(["tv:0.1", "correlation:200"])
    assert isinstance(tv, R.TotalVariation) and tv.weight == 0.1
    assert isinstance(corr, R.CorrelationLoss) and corr.weight == 200.0
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    assert tv(x) == pytest.approx(0.1 * float(R.total_variation(x)))
    # the same module serves images and voxel grids
    assert tv(torch.rand(1, 2, 3, 4, 5)).ndim == 0


def test_spec_options_aliases_and_schedule():
    name, weight, kw = parse_regularizer_spec("tv:0.5:penalty=huber,delta=0.05,isotropic=true")
    assert (name, weight, kw) == ("tv", 0.5, {"penalty": "huber", "delta": 0.05, "isotropic": True})
    (sw,) = parse_regularizers(["cvsw:2"])
    assert isinstance(sw, R.SlicedWasserstein) and sw.control_variate == "upper"
    (c,) = parse_regularizers(["correlation:200:ramp=linear,ramp_steps=100,ramp_start=10"])
    assert c.current_weight(0) == 0.0 and c.current_weight(60) == pytest.approx(100.0) and c.current_weight(500) == 200.0
    a, b = torch.rand(1, 8), torch.rand(1, 8)
    c.set_step(60)
    assert c(a, b) == pytest.approx(100.0 * float(R.correlation_loss(a, b)))
    assert c(a, b, step=10) == 0.0
    assert build("orthogonality", 3.0).weight == 3.0
    assert set(REGULARIZERS) <= set(R.known_names())
    for name in REGULARIZERS:  # every registered name builds with defaults
        assert isinstance(build(name), torch.nn.Module)


def test_schedules():
    assert Schedule()(123) == 1.0
    lin = Schedule("linear", start_step=0, end_step=100)
    assert (lin(-5), lin(50), lin(200)) == (0.0, 0.5, 1.0)
    cos = Schedule("cosine", start_step=0, end_step=100, start_value=1.0, end_value=0.0)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="kind"):
        Schedule("exp")
    with pytest.raises(ValueError, match="end_step"):
        Schedule("linear", start_step=5, end_step=5)


def test_unknown_names_and_bad_specs():
    with pytest.raises(KeyError, match="known: .*correlation.*tv"):
        parse_regularizers(["tvv:0.1"])
    with pytest.raises(KeyError, match="known"):
        build("nope")
    with pytest.raises(ValueError, match="bad weight"):
        parse_regularizers(["tv:heavy"])
    with pytest.raises(ValueError, match="key=value"):
        parse_regularizers(["tv:0.1:penalty"])
    with pytest.raises(TypeError, match="bad arguments for regularizer 'tv'"):
        parse_regularizers(["tv:0.1:colour=red"])


def test_import_is_light():
    code = "import sys, geo.regularizers as r; r.parse_regularizer_spec('tv:0.1'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

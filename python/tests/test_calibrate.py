"""kvq_jit.calibrate_scales: static scales by hand, the MSE grid never
worse than min-max, errors by name."""

import math

import pytest
import torch

import kvq_jit


def test_min_max_scales_by_hand():
    # Head 0 spans [-2, 1], head 1 [-0.25, 0.5]: [tokens 2, heads 2, dim 2].
    k = torch.tensor([[[-2.0, 1.0], [0.5, -0.25]],
                      [[0.5, -1.0], [0.25, 0.125]]], dtype=torch.float16)
    s = kvq_jit.calibrate_scales(k)
    assert s["scale"].tolist() == [pytest.approx(2.0 / 448)]
    s = kvq_jit.calibrate_scales(k, format="int4", asymmetric=True,
                                 granularity="head")
    assert s["scale"].tolist() == [pytest.approx(0.2), pytest.approx(0.05)]
    assert s["zero"].tolist() == [pytest.approx(-2.0), pytest.approx(-0.25)]


def test_mse_grid_is_never_worse_than_min_max():
    torch.manual_seed(0)
    k = torch.randn(256, 4, 64)
    for fmt in ("e4m3", "e5m2", "int4", "int8"):
        a = kvq_jit.calibrate_scales(k, format=fmt, granularity="head")
        b = kvq_jit.calibrate_scales(k, format=fmt, granularity="head",
                                     method="mse")
        assert (b["relative_error"] <= a["relative_error"]).all(), fmt
        if fmt == "int4":  # clipping Gaussian tails pays at 4 bits
            assert (b["relative_error"] < a["relative_error"]).all()
            assert (b["scale"] < a["scale"]).all()


def test_bad_input_is_an_error_naming_it():
    k = torch.zeros(2, 1, 2)
    k[1, 0, 1] = math.nan
    with pytest.raises(kvq_jit.InvalidArgumentError, match="sample 3 .token 1, head 0."):
        kvq_jit.calibrate_scales(k)
    with pytest.raises(kvq_jit.InvalidArgumentError, match="got 'fp4'"):
        kvq_jit.calibrate_scales(torch.ones(2, 1, 2), format="fp4")
    with pytest.raises(kvq_jit.InvalidArgumentError, match=r"\[tokens, kv_heads, head_dim\]"):
        kvq_jit.calibrate_scales(torch.ones(2, 2))
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError
        kvq_jit.calibrate_scales(torch.ones(2, 1, 2), method="best")

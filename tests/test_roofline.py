"""The hardware what-if: projections behave like a roofline, and the budget picks the best width that fits."""
import pytest

from nml_core.analysis import roofline
from nml_core.arch.gpt2 import cost
from nml_core.nesting.width import ALL_AXES, WidthSpec
from conftest import tiny_config

CFG = tiny_config(vocab_size=50257, n_positions=128)
LAT = {"prefill_len": 128, "matmul_gflops": 100.0}


def rows():
    out = []
    for w, ppl, ms in [(1.0, 100.0, 40.0), (0.5, 130.0, 22.0), (0.25, 200.0, 14.0), (0.125, 400.0, 10.0)]:
        c = cost(CFG, WidthSpec(w, ALL_AXES).dims(CFG), 128)
        out.append({**c, "width": w, "ppl": ppl, "acc": 1 / ppl, "prefill_b1_ms": ms, "prefill_b8_ms": 6 * ms,
                    "decode_tok_s": 1000 / (ms / 4)})
    return out


def project(preset_name):
    return roofline.project(rows(), LAT, roofline.PRESETS[preset_name], CFG.n_layer, CFG.vocab_size)


@pytest.mark.parametrize("preset", list(roofline.PRESETS))
def test_smaller_widths_are_never_projected_slower(preset):
    proj = project(preset)
    for key in ("prefill_b1_ms", "prefill_b8_ms", "decode_ms", "weights_mb"):
        values = [p[key] for p in proj]
        assert values == sorted(values, reverse=True), (key, values)


def test_decode_is_never_faster_than_reading_the_weights():
    h100 = roofline.PRESETS["NVIDIA H100 SXM"]
    for r, p in zip(rows(), project("NVIDIA H100 SXM")):
        assert p["decode_ms"] >= r["params"] * 2 / (h100.bandwidth_gbs * 1e9) * 1e3


def test_a_faster_device_is_projected_faster():
    for a100, pi in zip(project("NVIDIA A100 40GB"), project("Raspberry Pi 5")):
        assert a100["prefill_b8_ms"] < pi["prefill_b8_ms"] and a100["decode_ms"] < pi["decode_ms"]


def test_calibration_recovers_a_fixed_overhead_and_rate():
    """Times made as exactly c + F / R come back as c and R; the host overhead survives on any device."""
    rs = rows()
    for r in rs:
        r["prefill_b1_ms"] = 3.0 + roofline.call_flops(r, "prefill_b1_ms", 128) / 50e9 * 1e3
    fit = roofline.calibrate(rs, "prefill_b1_ms", 128, peak_here_gflops=100.0)
    assert fit["overhead_ms"] == pytest.approx(3.0) and fit["rate_gflops"] == pytest.approx(50.0)
    assert fit["utilisation"] == pytest.approx(0.5)
    h100 = roofline.project(rs, LAT, roofline.PRESETS["NVIDIA H100 SXM"], CFG.n_layer, CFG.vocab_size)
    assert all(p["prefill_b1_ms"] >= 3.0 for p in h100)


def test_budget_picks_the_best_width_that_fits():
    rs = [{**r, **roofline.measured(r)} for r in rows()]
    assert roofline.best_within_budget(rs, "prefill_b1_ms", None, None)["width"] == 1.0
    assert roofline.best_within_budget(rs, "prefill_b1_ms", 25.0, None)["width"] == 0.5
    assert roofline.best_within_budget(rs, "prefill_b1_ms", 25.0, None, quality="acc")["width"] == 0.5
    smallest = min(r["weights_mb"] for r in rs)
    assert roofline.best_within_budget(rs, "prefill_b1_ms", None, smallest)["width"] == 0.125
    assert roofline.best_within_budget(rs, "prefill_b1_ms", 1.0, None) is None

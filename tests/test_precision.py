"""Precision by measurement: --mixed-precision auto on a CPU follows a probe measured on that CPU and kept."""
import json

import pytest
import torch

from nml_core import device as devices
from nml_core.training import precision
from nml_core.errors import NMLError
from nml_core.training.config import TrainConfig
from nml_core.training.losses import DenseTarget, nested_kd_loss, soft_targets

CPU = torch.device("cpu")


@pytest.mark.parametrize("requested, speedup, expected", [
    ("auto", 1.35, "bf16"), ("auto", 1.19, "no"), ("auto", None, "no"), ("no", 2.0, "no"), ("bf16", 1.05, "bf16")])
def test_a_cpu_takes_bf16_only_where_it_was_measured_faster(requested, speedup, expected):
    assert devices.mixed_precision(CPU, requested, speedup) == expected


@pytest.mark.parametrize("requested, speedup, words", [("bf16", 0.42, "0.42x the speed of fp32"),
                                                       ("fp16", 2.0, "no fast path on a CPU")])
def test_a_refusal_names_what_was_measured(requested, speedup, words):
    with pytest.raises(NMLError, match=words):
        devices.mixed_precision(CPU, requested, speedup)


def test_the_probe_is_read_from_this_cpus_device_profile_without_measuring(tmp_path, monkeypatch):
    key = devices.device_info("cpu", 2)["device_key"]
    (tmp_path / "device_profiles").mkdir()
    (tmp_path / "device_profiles" / f"{key}.json").write_text(json.dumps(
        {"device_key": key, "bf16_probe": {"speedup": 1.31, "torch": torch.__version__}}))
    monkeypatch.setattr(precision, "PROFILE_ROOTS", (str(tmp_path),))
    monkeypatch.setattr(precision, "bf16_probe", lambda: pytest.fail("measured although a probe is stored"))
    assert precision.cpu_bf16_speedup(threads=2) == 1.31


def test_a_probe_kept_on_a_cpu_with_other_bf16_instructions_is_measured_again(tmp_path, monkeypatch):
    """Two CPUs a VM names alike: the kept probe of the one without native bf16 must not decide for the other."""
    key = devices.device_info("cpu", 2)["device_key"]
    (tmp_path / "device_profiles").mkdir()
    (tmp_path / "device_profiles" / f"{key}.json").write_text(json.dumps(
        {"device_key": key, "bf16_probe": {"speedup": 0.05, "torch": torch.__version__, "bf16_isa": []}}))
    monkeypatch.setattr(precision, "PROFILE_ROOTS", (str(tmp_path),))
    monkeypatch.setattr(precision, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(precision, "bf16_isa", lambda: ["avx512_bf16"])
    monkeypatch.setattr(precision, "bf16_probe", lambda: {"speedup": 1.9, "torch": torch.__version__,
                                                          "bf16_isa": ["avx512_bf16"]})
    assert precision.cpu_bf16_speedup(threads=2) == 1.9


def test_without_a_profile_the_probe_runs_once_and_is_kept(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(precision, "PROFILE_ROOTS", ())
    monkeypatch.setattr(precision, "CACHE", tmp_path)
    monkeypatch.setattr(precision, "bf16_probe", lambda: calls.append(1) or {"speedup": 0.4, "torch": torch.__version__})
    assert precision.cpu_bf16_speedup(threads=2) == 0.4 and precision.cpu_bf16_speedup(threads=2) == 0.4
    assert calls == [1] and len(list(tmp_path.glob("*.json"))) == 1


def test_the_probe_measures_both_precisions(monkeypatch):
    monkeypatch.setattr(precision, "PROBE_SHAPE", dict(n_layer=1, n_embd=32, n_head=2, n_positions=16))
    monkeypatch.setattr(precision, "PROBE_BATCH", (2, 16))
    probe = precision.bf16_probe(repeats=1)
    assert probe["fp32_ms"] > 0 and probe["bf16_ms"] > 0
    assert probe["speedup"] == pytest.approx(probe["fp32_ms"] / probe["bf16_ms"], rel=1e-2)


def test_the_fused_loss_on_bf16_logits_keeps_their_dtype_and_matches_fp32():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 20, 300, generator=g)
    y = torch.randint(0, 300, (2, 20), generator=g)
    target = DenseTarget.from_logprobs(soft_targets(torch.randn(2, 20, 300, generator=g), 2.0))
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        zz = z.detach().to(dtype).clone().requires_grad_(True)
        loss, _ = nested_kd_loss(zz, y, target, 0.5, 2.0)
        loss.backward()
        grads[dtype] = (float(loss), zz.grad)
    assert grads[torch.bfloat16][1].dtype == torch.bfloat16
    assert grads[torch.bfloat16][0] == pytest.approx(grads[torch.float32][0], rel=1e-2)
    torch.testing.assert_close(grads[torch.bfloat16][1].float(), grads[torch.float32][1], atol=2e-4, rtol=2e-2)


def test_one_process_may_train_in_one_precision_then_another():
    from nml_core.training.loop import make_accelerator
    assert make_accelerator(TrainConfig(device="cpu", mixed_precision="no")).mixed_precision == "no"
    assert make_accelerator(TrainConfig(device="cpu", mixed_precision="bf16")).mixed_precision == "bf16"
    assert make_accelerator(TrainConfig(device="cpu", mixed_precision="no")).mixed_precision == "no"

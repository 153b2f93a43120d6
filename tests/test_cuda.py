"""The GPU as a first-class device (skipped without CUDA; they must pass wherever CUDA is present); the compiled
one-graph step has its own tests (tests/test_graph_step.py)."""
import copy

import pytest
import torch

from nml_core import api
from nml_core.nesting.elastic import ElasticGPT2
from nml_core.training.config import TrainConfig
from nml_core.training.loop import make_accelerator, make_optimizer, nested_step

WIDTHS = [1.0, 0.5, 0.25, 0.125]


def one_step(model, teacher, batch, device: str, mixed_precision: str = "no") -> dict:
    cfg = TrainConfig(device=device, mixed_precision=mixed_precision)
    accelerator = make_accelerator(cfg)
    elastic = ElasticGPT2(model.to(device).train())
    losses = nested_step(elastic, teacher.to(device).eval(), batch.to(device), WIDTHS, cfg, accelerator)
    return {k: float(v.loss) for k, v in losses.items()}, {n: p.grad.cpu() for n, p in model.named_parameters()}


@pytest.mark.cuda
def test_nested_step_on_cuda_equals_the_cpu_step(tiny_model):
    teacher = copy.deepcopy(tiny_model)
    batch = torch.randint(0, 97, (4, 17), generator=torch.Generator().manual_seed(0))
    torch.backends.cuda.matmul.allow_tf32 = False
    cpu_losses, cpu_grads = one_step(copy.deepcopy(tiny_model), copy.deepcopy(teacher), batch, "cpu")
    gpu_losses, gpu_grads = one_step(copy.deepcopy(tiny_model), copy.deepcopy(teacher), batch, "cuda")
    assert cpu_losses == pytest.approx(gpu_losses, rel=1e-4)
    for name in cpu_grads:
        torch.testing.assert_close(gpu_grads[name], cpu_grads[name], atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.cuda
def test_bf16_autocast_trains(tiny_model):
    cfg = TrainConfig(device="cuda", mixed_precision="bf16", lr=3e-3)
    accelerator = make_accelerator(cfg)
    elastic = ElasticGPT2(copy.deepcopy(tiny_model).to("cuda").train())
    opt = make_optimizer(elastic, cfg, fused=True)
    teacher = copy.deepcopy(tiny_model).to("cuda").eval()
    batch = torch.randint(0, 97, (8, 17), generator=torch.Generator().manual_seed(0)).cuda()
    curve = []
    for _ in range(20):
        losses = nested_step(elastic, teacher, batch, WIDTHS, cfg, accelerator)
        opt.step()
        opt.zero_grad(set_to_none=True)
        curve.append(float(sum(v.loss for v in losses.values())))
    assert curve[-1] < curve[0] * 0.9


@pytest.mark.cuda
def test_eval_on_cuda_equals_eval_on_cpu(nested_copy):
    cpu = api.evaluate_run(nested_copy, max_tokens=512, device="cpu").report
    gpu = api.evaluate_run(nested_copy, max_tokens=512, device="cuda").report
    for a, b in zip(cpu.widths, gpu.widths):
        assert b["ppl"] == pytest.approx(a["ppl"], rel=1e-3)
    assert gpu.teacher["ppl"] == pytest.approx(cpu.teacher["ppl"], rel=1e-3)


def test_cuda_without_a_gpu_is_one_line(capsys, teacher_run, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    from nml_core.cli import main
    assert main(["eval", str(teacher_run), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU is visible" in err[0] and "--device cpu" in err[0]

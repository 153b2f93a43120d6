"""The nested step as one graph (--compile): one graph with no breaks, no recompiles over the steps of a run, no
host-device synchronisation outside logging steps, and the eager step's loss curve within 1%."""
import copy

import pytest
import torch

from nml_core.errors import NMLError
from nml_core.nesting.elastic import ElasticGPT2
from nml_core.training.config import TrainConfig
from nml_core.training.graph_step import GraphStep, check_graph_step
from nml_core.training.loop import make_accelerator, make_optimizer, nested_step

SUBNETS = [(1.0, 1.0), (1.0, 0.5), (0.5, 1.0), (0.5, 0.5), (0.25, 1.0), (0.125, 1.0)]


def session(model, device: str, compile: bool, **kw):
    cfg = TrainConfig(device=device, mixed_precision="no", compile=compile, lr=3e-3, **kw)
    accelerator = make_accelerator(cfg)
    elastic = ElasticGPT2(copy.deepcopy(model).to(device).train(), layer_rank=[1, 0])
    teacher = copy.deepcopy(model).to(device).eval().requires_grad_(False)
    opt = make_optimizer(elastic, cfg, fused=device == "cuda")
    graph = GraphStep(elastic, teacher, SUBNETS, cfg, accelerator) if compile else None

    def step(batch):
        losses = graph(batch) if graph else nested_step(elastic, teacher, batch, SUBNETS, cfg, accelerator)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return losses
    return step, graph


def batches(device: str, steps: int):
    return [torch.randint(0, 97, (4, 17), generator=torch.Generator().manual_seed(i % 8)).to(device)
            for i in range(steps)]


def loss_curve(model, device: str, compile: bool, steps: int) -> list[float]:
    step, _ = session(model, device, compile)
    curve = []
    try:
        for i, batch in enumerate(batches(device, steps)):
            curve.append(sum(float(v.loss) for v in step(batch).values()))  # read here, after the step: a test's sync
            if compile and i == 0:
                torch.compiler.set_stance("fail_on_recompile")  # static shapes: no recompile after the first step
    finally:
        torch.compiler.set_stance("default")
    return curve


def test_the_step_is_one_graph_with_no_break(tiny_model):
    _, graph = session(tiny_model, "cpu", compile=True)
    batch = batches("cpu", 1)[0]
    explained = torch._dynamo.explain(graph.step_losses)(batch[:, :-1], batch[:, 1:])
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


@pytest.mark.slow
def test_the_compiled_step_follows_the_eager_curve_with_no_recompile(tiny_model):
    eager = loss_curve(tiny_model, "cpu", False, 50)
    compiled = loss_curve(tiny_model, "cpu", True, 50)  # set_stance raises on any recompile after step 1
    assert eager[-1] < eager[0] * 0.9, "the toy learns"
    for i, (e, c) in enumerate(zip(eager, compiled)):
        assert c == pytest.approx(e, rel=0.01), i


def test_a_step_reads_nothing_back_from_the_device(tiny_model, monkeypatch):
    """Every way a tensor's value reaches the host (.item, .tolist, .cpu, .numpy, bool, float, int) is counted
    while the compiled step's forward, losses and backward run: the losses stay on the device until a logging
    step reads them all at once. (The optimizer is left out here: on a CPU, AdamW reads its CPU-side step
    counters; the CUDA test below runs the whole step under torch.cuda.set_sync_debug_mode("error").)"""
    _, graph = session(tiny_model, "cpu", compile=True)
    graph(batches("cpu", 1)[0])  # the first (compiling) call is not what is counted
    reads = []
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _real=real, _name=name, **k: (
            reads.append(_name), _real(self, *a, **k))[1])
    for batch in batches("cpu", 5):
        graph(batch)
    monkeypatch.undo()
    assert reads == []


def test_what_one_graph_cannot_do_is_one_line():
    cpu = torch.device("cpu")
    cases = [(TrainConfig(compile=True, strategy="sandwich"), 1, cpu, "--strategy all"),
             (TrainConfig(compile=True, kd_source="ta"), 1, cpu, "--kd-source teacher or cascade"),
             (TrainConfig(compile=True), 2, cpu, "several processes"),
             (TrainConfig(compile=True, cuda_graphs=True), 1, cpu, "needs --device cuda"),
             (TrainConfig(cuda_graphs=True), 1, torch.device("cuda"), "add --compile")]
    for cfg, processes, device, words in cases:
        with pytest.raises(NMLError, match=words):
            check_graph_step(cfg, processes, device)


def test_a_compiler_that_does_not_work_is_one_line(tiny_model, monkeypatch):
    import torch._dynamo.exc as dynamo_exc

    def broken(fn, **kw):
        def run(*a):
            raise dynamo_exc.Unsupported("no C++ compiler found")
        return run
    monkeypatch.setattr("nml_core.training.graph_step.torch.compile", broken)
    step, _ = session(tiny_model, "cpu", compile=True)
    with pytest.raises(NMLError, match="--compile failed here .*drop --compile"):
        step(batches("cpu", 1)[0])


@pytest.mark.cuda
def test_cuda_graphs_follow_the_eager_curve_and_never_sync(tiny_model):
    eager = loss_curve(tiny_model, "cuda", False, 50)
    step, _ = session(tiny_model, "cuda", compile=True, cuda_graphs=True)
    data = batches("cuda", 50)
    losses = [step(data[0])]
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses += [step(b) for b in data[1:]]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    curve = [sum(float(v.loss) for v in step_losses.values()) for step_losses in losses]
    for i, (e, c) in enumerate(zip(eager, curve)):
        assert c == pytest.approx(e, rel=0.01), i

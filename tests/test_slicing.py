import pytest
import torch
from transformers import GPT2LMHeadModel

from nml_core.arch.gpt2 import slice_params as sliced_tensors
from nml_core.nesting.elastic import ElasticGPT2, extract_student
from nml_core.nesting.width import WidthSpec, parse_axes

AXES = ["ffn", "heads,hidden", "ffn,heads,hidden"]


@pytest.mark.parametrize("axes", AXES)
@pytest.mark.parametrize("width", [1.0, 0.5, 0.25, 0.125])
def test_elastic_forward_equals_extracted_student(tiny_model, axes, width):
    axes = parse_axes(axes)
    x = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(1))
    elastic = ElasticGPT2(tiny_model, axes).eval()
    student = extract_student(tiny_model, WidthSpec(width, axes)).eval()
    with torch.no_grad():
        torch.testing.assert_close(elastic(x, width=width).logits, student(input_ids=x).logits, atol=1e-5, rtol=1e-5)


def test_sliced_tensors_are_views_of_the_full_weights(tiny_model):
    params = dict(tiny_model.named_parameters())
    dims = WidthSpec(0.5).dims(tiny_model.config)
    views = sliced_tensors(params, tiny_model.config, dims)
    for name, v in views.items():
        if "c_attn" in name:
            continue  # q, k, v prefixes are not adjacent: one small cat, checked by the gradient test
        assert v.untyped_storage().data_ptr() == params[name].untyped_storage().data_ptr(), name


def test_gradients_reach_only_the_sliced_prefix(tiny_model):
    tiny_model.train()
    elastic = ElasticGPT2(tiny_model)
    x = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(2))
    elastic(x, width=0.25).logits.square().mean().backward()
    t = tiny_model.transformer
    d2, f2, d = 16, 64, 64
    assert t.wte.weight.grad[:, :d2].abs().sum() > 0 and t.wte.weight.grad[:, d2:].abs().sum() == 0
    fc = t.h[0].mlp.c_fc.weight.grad
    assert fc[:d2, :f2].abs().sum() > 0 and fc[d2:].abs().sum() == 0 and fc[:, f2:].abs().sum() == 0
    qkv = t.h[1].attn.c_attn.weight.grad
    for block in range(3):  # q, k and v: only the first d2 columns of each block
        cols = qkv[:d2, block * d:(block + 1) * d]
        assert cols[:, :d2].abs().sum() > 0 and cols[:, d2:].abs().sum() == 0
    assert qkv[d2:].abs().sum() == 0
    assert t.ln_f.weight.grad[d2:].abs().sum() == 0


def test_elastic_forward_makes_no_full_copies(tiny_model):
    """Training: the skeletons live on the meta device (no weight copies per step). Inference: one student per
    shape with contiguous copies of the prefixes, built once and reused while the weights stay the same."""
    elastic = ElasticGPT2(tiny_model).eval()
    x = torch.zeros(1, 4, dtype=torch.long)
    elastic(x, width=0.5).logits.sum().backward()
    skeleton = next(iter(elastic._skeletons.values()))
    assert all(p.device.type == "meta" for p in skeleton.parameters())
    with torch.no_grad():
        elastic(x, width=0.5)
    dims = elastic.spec(0.5).dims(tiny_model.config)
    student = elastic.view_student(dims)
    assert all(p.is_contiguous() for p in student.parameters())
    assert elastic.view_student(dims) is student, "built once per shape"
    params = sum(p.numel() for p in student.parameters())
    assert params < sum(p.numel() for p in tiny_model.parameters()), "a student's own size, not the full model's"


def test_view_student_follows_weight_updates(tiny_model):
    """An optimizer step changes the shared weights: the cached inference view must see it."""
    elastic = ElasticGPT2(tiny_model).eval()
    x = torch.randint(0, 100, (1, 8))
    with torch.no_grad():
        before = elastic(x, width=0.5).logits.clone()
        for p in tiny_model.parameters():
            p.add_(0.01)
        after = elastic(x, width=0.5).logits
        fresh = extract_student(tiny_model, elastic.spec(0.5)).eval()(input_ids=x).logits
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, fresh, atol=1e-5, rtol=1e-5)


def test_a_cached_view_student_follows_the_shared_models_mode(tiny_model):
    """The mode is set only when it changes (a .train() walk per call cost more than the small widths' forward):
    a cached student must still switch with the shared model, dropout included."""
    elastic = ElasticGPT2(tiny_model).eval()
    dims = elastic.spec(0.5).dims(tiny_model.config)
    student = elastic.view_student(dims)
    assert not any(m.training for m in student.modules())
    tiny_model.train()
    assert elastic.view_student(dims) is student and all(m.training for m in student.modules())
    tiny_model.eval()
    assert not any(m.training for m in elastic.view_student(dims).modules())


def _nested_grads(model, prefix_grads: bool, widths=(1.0, 0.5, 0.25, 0.125)) -> dict:
    """Gradients of one nested step (every width's CE backward into the shared weights)."""
    elastic = ElasticGPT2(model.train())
    elastic.prefix_grads = prefix_grads
    x = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    for w in widths:
        logits = elastic(x[:, :-1], width=w).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("widths", [(1.0, 0.5, 0.25, 0.125), (0.5, 0.125), (0.375,)])
def test_prefix_gradients_equal_autograd_slicing(tiny_model, widths):
    """The in-place prefix gradient (no full-size zero tensor per width) is today's autograd gradient."""
    import copy
    fast = _nested_grads(copy.deepcopy(tiny_model), True, widths)
    ref = _nested_grads(copy.deepcopy(tiny_model), False, widths)
    assert fast.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], atol=1e-6, rtol=1e-5, msg=name)


def test_a_small_width_backward_allocates_no_full_size_gradients():
    """Width 1/8 alone: autograd slicing allocates a full-size zero gradient per parameter; prefix gradients
    allocate about the slices' size (the CPU proxy of the GPU's memory traffic)."""
    from torch.profiler import ProfilerActivity, profile

    from conftest import tiny_config

    def allocated(prefix_grads: bool) -> int:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(tiny_config(n_positions=16))
        for p in model.parameters():
            p.grad = torch.zeros_like(p)  # as after the first step
        elastic = ElasticGPT2(model.train())
        elastic.prefix_grads = prefix_grads
        logits = elastic(torch.zeros(1, 8, dtype=torch.long), width=0.125).logits
        loss = logits.float().logsumexp(-1).mean()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            loss.backward()
        return sum(max(0, e.self_cpu_memory_usage) for e in prof.key_averages())

    full = sum(p.numel() for p in GPT2LMHeadModel(tiny_config(n_positions=16)).parameters()) * 4
    sliced, prefix = allocated(False), allocated(True)
    assert sliced - prefix > 0.9 * full, "the full-size zero gradients (one per parameter) are gone"
    assert prefix < sliced / 2

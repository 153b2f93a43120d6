"""The elastic model: one set of GPT-2 weights run at any nested width and depth, and student extraction.
Training runs on views of the full weights (no copies: gradients land in the shared parameters); inference runs a
cached stock student per shape whose parameters are contiguous copies of the prefixes (the faster layout).

The elastic forward runs HF's own GPT-2 code: a stock GPT2LMHeadModel *skeleton* of the student's config
(parameters on the meta device, no memory) is called with `torch.func.functional_call`, feeding it views of
the full parameters. Gradients of a width land in the shared full parameters, in exactly the prefix that
width uses.

Training cost, per width and step: the slice plan (which prefix of which parameter) is built once per width,
not re-read from parameter names every forward; and in a single-process run each slice is a _PrefixGrad,
whose backward adds the width's gradient straight into the prefix of `param.grad`. Autograd's own slice
backward would build a full-size zero gradient per parameter per width and copy the slice into it
(SliceBackward): on a GPU most of the nested step's kernel launches and memory traffic, on a CPU a full-size
memset per parameter per width (bench/nested_step_ops.py).
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from ..arch.gpt2 import (TIED, Prefix, StudentDims, add_into_prefix_, prefix_of, slice_params,
                         student_config, student_name, take_prefix)
from ..device import world_size
from .depth import subnet_dims
from .width import ALL_AXES, WidthSpec

VIEW_CACHE = 16  # inference view students kept per ElasticGPT2 (the app's sliders walk a width x depth grid)


class _PrefixGrad(torch.autograd.Function):
    """A prefix of a shared parameter whose backward adds the width's gradient into the prefix of param.grad
    in place (param.grad is allocated once per step, by the first width that reaches it).

    Single process only: DDP's gradient hooks fire on autograd's own accumulation, which this bypasses, so
    under `accelerate launch` the elastic model uses plain slices (ElasticGPT2.prefix_grads)."""

    @staticmethod
    def forward(ctx, param: torch.Tensor, prefix: Prefix) -> torch.Tensor:
        ctx.param, ctx.prefix = param, prefix
        return take_prefix(param.detach(), prefix)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        param = ctx.param
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        add_into_prefix_(param.grad, ctx.prefix, grad)
        return None, None


class ElasticGPT2(nn.Module):
    """A GPT2LMHeadModel whose forward can run at any nested width and depth, sharing one set of weights.

    `forward(input_ids, width=w, depth=d)` returns HF's CausalLMOutputWithCrossAttentions of the (w, d) student
    (`.logits`, and `.past_key_values` with a cache); (1, 1) is the full model.
    layer_rank: the layers, most important first (a depth-d student keeps the top d x L); default prefix order.
    """

    def __init__(self, model: GPT2LMHeadModel, axes=None, layer_rank: list[int] | None = None):
        super().__init__()
        self.model = model
        self.axes = frozenset(axes) if axes is not None else ALL_AXES
        self.layer_rank = list(layer_rank) if layer_rank is not None else list(range(model.config.n_layer))
        self._skeletons: dict[StudentDims, GPT2LMHeadModel] = {}
        self._views: dict[StudentDims, tuple[tuple, GPT2LMHeadModel]] = {}
        self._plans: dict[StudentDims, tuple[int, list]] = {}
        self._param_list: list | None = None  # the shared model's parameters, listed at the first view_student
        self.prefix_grads = world_size() == 1  # see _PrefixGrad
        self.train(model.training)

    @property
    def config(self) -> GPT2Config:
        return self.model.config

    def spec(self, width: float) -> WidthSpec:
        return WidthSpec(width, self.axes)

    def dims(self, width: float, depth: float = 1.0) -> StudentDims:
        """The (width, depth) student's sizes: the width's prefixes, the depth's top-ranked layers."""
        return subnet_dims(self.config, self.axes, width, depth, self.layer_rank)

    def skeleton(self, dims: StudentDims) -> GPT2LMHeadModel:
        """A parameter-less stock model of the student's config (built once per shape, on meta)."""
        if dims not in self._skeletons:
            with torch.device("meta"):
                self._skeletons[dims] = GPT2LMHeadModel(student_config(self.config, dims))
        skel = self._skeletons[dims]
        skel.train(self.model.training)  # dropout follows the shared model's mode
        return skel

    def view_student(self, dims: StudentDims) -> GPT2LMHeadModel:
        """For inference: a stock student of the shape, holding contiguous copies of the width's prefixes of the
        shared weights, built once per shape and rebuilt only when the weights change (in-place updates bump
        tensor versions). Calling it is a plain module call, exactly as fast as an extracted student.

        Why copies, not views: a prefix of a row-major matrix is strided, and strided weights made the matmuls
        slower (the LM head's (V, d') slice up to a third at small widths; the layers' up to +7% more at
        width 1/8, measured against views in one run: BENCHMARKS.md, goal 3). The copies cost the student's
        own size (at most the sum of the cached shapes'); the last VIEW_CACHE shapes are kept.
        """
        # the weights change in place (optimizer steps, load_state_dict bump versions; a move/cast gives new
        # storage: key on it too); the parameter list itself is walked once, not per call (~90 us per walk)
        if self._param_list is None:
            self._param_list = list(self.model.parameters())
        params = self._param_list
        version = (sum(p._version for p in params), params[0].data_ptr(), params[0].dtype)
        hit = self._views.pop(dims, None)
        if hit is None or hit[0] != version:
            views = {k: v.contiguous() for k, v in
                     slice_params(dict(self.model.named_parameters()), self.config, dims).items()}
            with torch.device("meta"):
                student = GPT2LMHeadModel(student_config(self.config, dims))
            student.load_state_dict({k: v.detach() for k, v in views.items()}, strict=False, assign=True)
            student.tie_weights()
            hit = (version, student.requires_grad_(False))
        self._views[dims] = hit  # most recently used last
        while len(self._views) > VIEW_CACHE:
            self._views.pop(next(iter(self._views)))
        student = hit[1]
        if student.training != self.model.training:  # .train() walks every submodule: ~150 us, paid only on a change
            student.train(self.model.training)
        return student

    def forward(self, input_ids: torch.Tensor, width: float = 1.0, depth: float = 1.0, **kwargs):
        if width == 1.0 and depth == 1.0:
            return self.model(input_ids=input_ids, **kwargs)
        dims = self.dims(width, depth)
        if not torch.is_grad_enabled():
            return self.view_student(dims)(input_ids=input_ids, **kwargs)
        return self.sliced_forward(self.plan(dims), self.skeleton(dims), input_ids, self.prefix_grads, **kwargs)

    def sliced_forward(self, plan: list, skeleton: GPT2LMHeadModel, input_ids: torch.Tensor, prefix_grads: bool,
                       **kwargs):
        """HF's GPT-2 forward of a width's skeleton on the plan's slices of the shared parameters; prefix_grads:
        each slice's backward adds into the prefix of the shared gradient in place (eager training, one process),
        else plain slices (DDP; a compiled graph, whose compiler fuses their backward itself)."""
        take = _PrefixGrad.apply if prefix_grads else take_prefix
        views = {name: take(p, prefix) for name, p, prefix in plan}
        return torch.func.functional_call(skeleton, views, args=(), kwargs=dict(input_ids=input_ids, **kwargs))

    def plan(self, dims: StudentDims) -> list[tuple[str, torch.nn.Parameter, Prefix]]:
        """(the student's name, shared parameter, its prefix) of one sub-model, built once per shape (and again
        only if the model's parameters are replaced); a dropped layer's parameters are not in it."""
        owner = id(next(self.model.parameters()))
        hit = self._plans.get(dims)
        if hit is None or hit[0] != owner:
            plan = [(student_name(name, dims.layers), p, prefix_of(name, p.dim(), self.config.n_embd, dims))
                    for name, p in self.model.named_parameters()
                    if name != TIED and student_name(name, dims.layers) is not None]
            hit = self._plans[dims] = (owner, plan)
        return hit[1]


def extract_student(model: GPT2LMHeadModel, spec: WidthSpec, layers: tuple[int, ...] | None = None) -> GPT2LMHeadModel:
    """A standalone stock GPT2LMHeadModel holding copies of the width's prefix weights of the kept `layers`
    (None: every layer), renumbered 0..k-1 in their original order."""
    dims = replace(spec.dims(model.config), layers=layers)
    cfg = student_config(model.config, dims)
    tensors = slice_params(dict(model.named_parameters()), model.config, dims)
    student = GPT2LMHeadModel(cfg).to(next(model.parameters()).device)
    with torch.no_grad():
        missing, unexpected = student.load_state_dict({k: v.detach().clone().contiguous() for k, v in tensors.items()},
                                                      strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    student.tie_weights()
    student.train(model.training)
    return student

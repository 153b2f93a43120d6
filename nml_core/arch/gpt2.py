"""Everything the engine knows about GPT-2's layout, in one place (Hugging Face `GPT2LMHeadModel`).

The nesting, training and analysis code never matches a GPT-2 parameter name or module path itself; it asks
this module:
  model_dims(cfg)              -> StudentDims of the full model
  student_config(cfg, dims)    -> a stock GPT2Config of a student
  prefix_of(name, ...)         -> the slice rule (Prefix) of one parameter for a student's dims
  take_prefix / add_into_prefix_ -> apply a rule to a parameter (forward) or to its gradient (backward)
  slice_params(params, ...)    -> views of the full parameters holding one student (its layers renumbered)
  permute_units(model, perms)  -> reorder heads / FFN neurons / residual channels in place (importance tables)
  hook_points(model)           -> the modules importance scoring listens to
  cost(cfg, dims, ctx)         -> parameters, FLOPs per token, fp16 size
  check_model_type(type, what) -> one-line error unless it is a GPT-2
Shapes (Conv1D stores weights as (in, out)); d = n_embd, a = attention inner width (heads x head_dim),
f = n_inner, V = vocab, P = positions:
  wte (V, d), wpe (P, d), ln_* (d,)
  attn.c_attn.weight (d, 3d) = [q | k | v], each block head-major  -> student (d', 3a')
  attn.c_proj.weight (d, d) (in = heads, out = residual)           -> student (a', d')
  mlp.c_fc.weight (d, f), mlp.c_proj.weight (f, d)                 -> (d', f'), (f', d')
  lm_head.weight is tied to wte.
GPT-2 ties n_embd = n_head * head_dim (GPT2Attention splits c_attn's output at n_embd), so heads and residual
channels can only shrink together: a heads-only student would not be a stock GPT-2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ..errors import NMLError

TIED = "lm_head.weight"  # tied to transformer.wte.weight: never stored or sliced on its own
EMBEDDING = "transformer.wte.weight"
LAYER = "transformer.h."  # + "<i>.<rest>": the parameters of block i


@dataclass(frozen=True)
class StudentDims:
    """Concrete sizes of one (student) model: heads kept, residual width, FFN neurons, head dim, and the
    teacher's layers it keeps, in their original order (None: all of them)."""
    n_head: int
    n_embd: int
    n_inner: int
    head_dim: int
    layers: tuple[int, ...] | None = None

    @property
    def attn_dim(self) -> int:
        return self.n_head * self.head_dim


def check_model_type(model_type: str | None, what: str = "teacher") -> None:
    """The one "is this GPT-2" check (config.json's model_type), with the one-line error."""
    if model_type != "gpt2":
        raise NMLError(f"{what} is a {model_type!r} model, not GPT-2; NML Explorer nests GPT-2 models only")


def describe_shape(cfg: GPT2Config) -> str:
    return f"{cfg.n_layer}L/{cfg.n_embd}d/{cfg.n_head}h"


def model_dims(cfg: GPT2Config) -> StudentDims:
    return StudentDims(n_head=cfg.n_head, n_embd=cfg.n_embd, n_inner=cfg.n_inner or 4 * cfg.n_embd,
                       head_dim=cfg.n_embd // cfg.n_head)


def n_layers(cfg: GPT2Config, dims: StudentDims) -> int:
    """How many blocks a student of `cfg` runs."""
    return cfg.n_layer if dims.layers is None else len(dims.layers)


def student_config(cfg: GPT2Config, dims: StudentDims) -> GPT2Config:
    """A stock GPT2Config for a student of `cfg` (same depth, vocab, context, epsilon, attention kernel)."""
    data = cfg.to_dict()
    for key in ("_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype"):
        data.pop(key, None)
    data.update(n_embd=dims.n_embd, n_head=dims.n_head, n_inner=dims.n_inner)
    if dims.layers is not None:
        data.update(n_layer=len(dims.layers))
    student = GPT2Config(**data)
    student.architectures = ["GPT2LMHeadModel"]
    student._attn_implementation = cfg._attn_implementation
    return student


# ---------------------------------------------------------------- slice rules

@dataclass(frozen=True)
class Prefix:
    """Which prefix of a full parameter a student uses: the first `rows` of dim 0, the first `cols` of the last
    dim, and for c_attn's [q | k | v] (last dim 3 x qkv_full) the first qkv_keep columns of each block."""
    rows: int | None = None
    cols: int | None = None
    qkv_full: int | None = None
    qkv_keep: int | None = None


def prefix_of(name: str, ndim: int, full_attn: int, dims: StudentDims) -> Prefix:
    """The slice rule of one GPT-2 parameter (HF name) for a student of `dims`."""
    d2, a2, f2 = dims.n_embd, dims.attn_dim, dims.n_inner
    leaf = name.split(".")
    matrix = ndim == 2
    if leaf[-2] in ("wte", "wpe"):
        return Prefix(cols=d2)
    if leaf[-2] in ("ln_1", "ln_2", "ln_f"):
        return Prefix(rows=d2)
    if leaf[-3:-1] == ["attn", "c_attn"]:
        return Prefix(rows=d2 if matrix else None, qkv_full=full_attn, qkv_keep=a2)
    if leaf[-3:-1] == ["attn", "c_proj"]:
        return Prefix(rows=a2, cols=d2) if matrix else Prefix(rows=d2)
    if leaf[-3:-1] == ["mlp", "c_fc"]:
        return Prefix(rows=d2, cols=f2) if matrix else Prefix(rows=f2)
    if leaf[-3:-1] == ["mlp", "c_proj"]:
        return Prefix(rows=f2, cols=d2) if matrix else Prefix(rows=d2)
    raise ValueError(f"don't know how to slice parameter {name}")


def _box(t: torch.Tensor, prefix: Prefix) -> torch.Tensor:
    """The rows/cols prefix of t: always a view."""
    if prefix.rows is not None:
        t = t[:prefix.rows]
    if prefix.cols is not None:
        t = t[..., :prefix.cols]
    return t


def take_prefix(p: torch.Tensor, prefix: Prefix) -> torch.Tensor:
    """The student's part of a full parameter: a view, except for c_attn below full width, whose q, k and v
    blocks are not adjacent in memory (one small cat, O(d' x 3a'), negligible next to the matmul it feeds)."""
    t = _box(p, prefix)
    if prefix.qkv_full is None or prefix.qkv_keep == prefix.qkv_full:
        return t
    q, k, v = t.split(prefix.qkv_full, dim=-1)
    keep = prefix.qkv_keep
    return torch.cat([q[..., :keep], k[..., :keep], v[..., :keep]], dim=-1)


def add_into_prefix_(full: torch.Tensor, prefix: Prefix, part: torch.Tensor) -> None:
    """full[prefix] += part, in place: the inverse of take_prefix for gradients."""
    t = _box(full, prefix)
    if prefix.qkv_full is None or prefix.qkv_keep == prefix.qkv_full:
        t.add_(part)
        return
    keep = prefix.qkv_keep
    for j, block in enumerate(part.split(keep, dim=-1)):
        t[..., j * prefix.qkv_full: j * prefix.qkv_full + keep].add_(block)


def student_name(name: str, layers: tuple[int, ...] | None) -> str | None:
    """The student's name of a teacher parameter: block i becomes block j, its place among the kept layers;
    None for a block the student drops."""
    if layers is None or not name.startswith(LAYER):
        return name
    i, rest = name[len(LAYER):].split(".", 1)
    return f"{LAYER}{layers.index(int(i))}.{rest}" if int(i) in layers else None


def slice_params(params: dict[str, torch.Tensor], cfg: GPT2Config, dims: StudentDims) -> dict[str, torch.Tensor]:
    """Views of the teacher-shaped `params` (HF GPT-2 names) for one student's dims, keyed by the student's
    names (the tied head skipped, dropped layers left out)."""
    out = {}
    for name, p in params.items():
        mine = student_name(name, dims.layers)
        if name != TIED and mine is not None:
            out[mine] = take_prefix(p, prefix_of(name, p.dim(), cfg.n_embd, dims))
    return out


# ---------------------------------------------------------------- importance: where to listen, how to permute

def hook_points(model: GPT2LMHeadModel) -> dict:
    """{'layers': [{ffn_act, ffn_out_weight (f, d), attn_out (its input is the heads' context), norms}],
    'final_norm'}: the modules importance scoring hooks (nml_core.nesting.importance)."""
    layers = [{"ffn_act": b.mlp.act, "ffn_out_weight": b.mlp.c_proj.weight, "attn_out": b.attn.c_proj,
               "norms": [b.ln_1, b.ln_2]} for b in model.transformer.h]
    return {"layers": layers, "final_norm": model.transformer.ln_f}


@torch.no_grad()
def permute_units(model: GPT2LMHeadModel, perms: dict[str, torch.Tensor]) -> GPT2LMHeadModel:
    """Reorder units in place by the tables {'hidden': (d,), 'heads.<l>': (H,), 'ffn.<l>': (f,)}.

    Function-preserving: FFN neurons and heads are summed over, and LayerNorm's mean and variance do not
    depend on channel order, so the full-width logits are unchanged.
    """
    cfg = model.config
    H, d = cfg.n_head, cfg.n_embd
    h = d // H
    t = model.transformer
    hid = perms["hidden"].to(t.wte.weight.device)

    def take(p: torch.nn.Parameter, index: torch.Tensor, dim: int):
        p.data = p.data.index_select(dim, index.to(p.device)).contiguous()

    take(t.wte.weight, hid, 1)   # lm_head is tied to wte and follows
    take(t.wpe.weight, hid, 1)
    for ln in [t.ln_f] + [b.ln_1 for b in t.h] + [b.ln_2 for b in t.h]:
        take(ln.weight, hid, 0)
        take(ln.bias, hid, 0)
    for i, block in enumerate(t.h):
        attn, mlp = block.attn, block.mlp
        # heads: expand head order to column order inside each of q, k, v
        head_cols = (perms[f"heads.{i}"].view(H, 1) * h + torch.arange(h)).reshape(-1)
        qkv_cols = torch.cat([head_cols + j * d for j in range(3)])
        take(attn.c_attn.weight, hid, 0)
        take(attn.c_attn.weight, qkv_cols, 1)
        take(attn.c_attn.bias, qkv_cols, 0)
        take(attn.c_proj.weight, head_cols, 0)
        take(attn.c_proj.weight, hid, 1)
        take(attn.c_proj.bias, hid, 0)
        ffn = perms[f"ffn.{i}"]
        take(mlp.c_fc.weight, hid, 0)
        take(mlp.c_fc.weight, ffn, 1)
        take(mlp.c_fc.bias, ffn, 0)
        take(mlp.c_proj.weight, ffn, 0)
        take(mlp.c_proj.weight, hid, 1)
        take(mlp.c_proj.bias, hid, 0)
    model.tie_weights()
    return model


# ---------------------------------------------------------------- cost

def cost(cfg: GPT2Config, dims: StudentDims | None = None, ctx: int | None = None) -> dict:
    """Parameter counts, forward FLOPs per token and fp16 size of `cfg` (or of a student of it).

    L layers, d residual width, a attention width, f FFN neurons, V vocab, P positions, n context length:
      params      = V*d + P*d + L*(4d [2 LayerNorms] + d*3a + 3a [c_attn] + a*d + d [c_proj] + d*f + f + f*d + d) + 2d
                    (the LM head is tied to wte and counted once)
      non-embedding params = params - V*d - P*d
      FLOPs/token = 2*L*(d*3a + a*d + 2*d*f)    matmuls with the layer weights (2 FLOPs per multiply-add)
                  + 2*L*n*a                      attention scores and weighted values (Kaplan et al. 2020, eq. 2.2)
                  + 2*d*V                        the LM head
    """
    dims = dims or model_dims(cfg)
    L, V, P = n_layers(cfg, dims), cfg.vocab_size, cfg.n_positions
    d, a, f = dims.n_embd, dims.attn_dim, dims.n_inner
    n = ctx or cfg.n_positions
    per_layer = 4 * d + d * 3 * a + 3 * a + a * d + d + d * f + f + f * d + d
    params = V * d + P * d + L * per_layer + 2 * d
    flops = 2 * L * (d * 3 * a + a * d + 2 * d * f) + 2 * L * n * a + 2 * d * V
    return {"n_head": dims.n_head, "n_embd": d, "n_inner": f, "n_layer": L, "params": params,
            "nonemb_params": params - V * d - P * d, "flops_per_token": flops, "fp16_mb": round(params * 2 / 1e6, 2)}

"""One student of a run, out of it: a stock GPT-2 directory, a zip of it, a generation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..nesting.depth import subnet_dims
from ..nesting.elastic import ElasticGPT2, extract_student
from ..nesting.width import WidthSpec
from ..report import student_card
from ..store.export import check_export_target, save_model_dir
from ..store.models import load_run_model, run_config
from ..store.runs import load_run


@dataclass(frozen=True)
class Generation:
    text: str  # the prompt and its continuation
    capped: str | None  # how the request was cut to the model's context, or None


def generate(run_path, prompt: str, width: float = 1.0, max_new_tokens: int = 40, temperature: float = 0.8,
             seed: int = 0, static_cache: bool = False, device: str = "auto", depth: float = 1.0) -> Generation:
    """The prompt continued by the run's (width, depth) student (greedy at temperature 0; sampled with a fixed
    seed)."""
    from ..analysis.generate import context_cap, generate_ids
    run = load_run(run_path)
    model, tokenizer = load_run_model(run, device)
    elastic = ElasticGPT2(model, run.axes, run.layer_rank).eval()
    elastic.dims(width, depth)  # a width or depth the model cannot take: one line
    ids = tokenizer.encode(prompt)
    new = generate_ids(elastic, ids, width, max_new_tokens, temperature, seed, static_cache, depth=depth)
    return Generation(prompt + tokenizer.decode(new), context_cap(model.config.n_positions, len(ids), max_new_tokens))


def export(run_path, width: float, out: str | Path, device: str = "auto", depth: float = 1.0) -> Path:
    """Write the (width, depth) student as a stock HF GPT-2 directory (n_layer = the kept layers) with a model
    card (weights saved from `device`)."""
    run = load_run(run_path)
    spec = WidthSpec(width, run.axes)
    layers = subnet_dims(run_config(run), run.axes, width, depth, run.layer_rank).layers  # bad input: one line, first
    check_export_target(Path(out))
    model, tokenizer = load_run_model(run, device)
    student = extract_student(model, spec, layers)
    return save_model_dir(student, tokenizer, Path(out), card=student_card(run, spec, student.config, depth, layers),
                          mark=True)


def export_zip(run_path, width: float, depth: float = 1.0) -> bytes:
    """The (width, depth) student as a zip of a stock HF model directory (for a download button)."""
    import io
    import tempfile
    import zipfile
    with tempfile.TemporaryDirectory() as tmp:
        name = f"{load_run(run_path).name}-w{width:g}" + (f"-d{depth:.3g}" if depth != 1 else "")
        out = export(run_path, width, Path(tmp) / name, depth=depth)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(out.parent))
        return buf.getvalue()

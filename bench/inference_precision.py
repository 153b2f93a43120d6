"""Is bf16 worth it for inference on this device? Each width's extracted student in fp32 and cast to bf16:
latency of the three workloads (interleaved in one process) and perplexity on the run's held-out tokens.

  python -m bench.inference_precision [RUN] [--tokens 16384] [--repeats 10] [--device cpu|cuda]

bf16 is the better choice for a width where it is faster and its perplexity is within 0.5% of fp32's; the last
line says which widths qualify (nml_core.training.precision.INFERENCE_PPL_TOLERANCE).
"""
from __future__ import annotations

import argparse

import torch

from nml_core.analysis.evaluate import evaluate_models
from nml_core.analysis.latency import (decode_fn, decode_new_tokens, interleaved_timings, prefill_fn,
                                       tokens_per_s)
from nml_core.data.batches import eval_windows
from nml_core.device import resolve, set_threads
from nml_core.nesting.elastic import extract_student
from nml_core.nesting.width import WidthSpec
from nml_core.training.precision import INFERENCE_PPL_TOLERANCE
from nml_core.store.models import load_run_model, run_tokens
from nml_core.store.runs import load_run

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def measure(run_path: str, tokens: int, repeats: int, device: str) -> list[dict]:
    run = load_run(run_path)
    model = load_run_model(run)[0].eval()
    cfg = model.config
    windows = eval_windows(run_tokens(run).val, min(128, cfg.n_positions), tokens)
    fns, students = {}, {}
    for w in run.widths:
        for name, dtype in DTYPES.items():
            s = extract_student(model, WidthSpec(w, run.axes)).to(device, dtype).eval()
            students[(w, name)] = s
            for b in (1, 8):
                fns[f"{w:g}/{name}/ttft_b{b}"] = prefill_fn(
                    lambda x, s=s: s(input_ids=x, use_cache=True, logits_to_keep=1), b, cfg, device)
            fns[f"{w:g}/{name}/prefill_b8"] = prefill_fn(lambda x, s=s: s(input_ids=x, use_cache=False), 8, cfg, device)
            fns[f"{w:g}/{name}/decode"] = decode_fn(s, device)
    times = interleaved_timings(fns, device, repeats=repeats)
    rows = []
    for w in run.widths:
        ppl = {name: evaluate_models({"m": lambda x, s=students[(w, name)]: s(input_ids=x).logits.float()}, None,
                                     windows, device=device)["m"]["ppl"] for name in DTYPES}
        row = {"width": w, "ppl": ppl, "ppl_change": ppl["bf16"] / ppl["fp32"] - 1}
        for name in DTYPES:
            for k in ("ttft_b1", "ttft_b8", "prefill_b8"):
                row[f"{k}_{name}_ms"] = times[f"{w:g}/{name}/{k}"]["median_ms"]
            row[f"decode_{name}_tok_s"] = tokens_per_s(times[f"{w:g}/{name}/decode"], decode_new_tokens(cfg)).median
        row["bf16_qualifies"] = (row["ttft_b1_bf16_ms"] < row["ttft_b1_fp32_ms"]
                                 and abs(row["ppl_change"]) <= INFERENCE_PPL_TOLERANCE)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", default="cached_runs/shakespeare-nml-depth")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    threads = set_threads(None)
    device = resolve(a.device).type
    rows = measure(a.run, a.tokens, a.repeats, device)
    print(f"{a.run}, {device} ({threads} threads), torch {torch.__version__}; ppl on the first {a.tokens} held-out "
          f"tokens; latency medians of {a.repeats} interleaved calls")
    print("| width | TTFT 1x128 fp32 / bf16 ms | TTFT 8x128 fp32 / bf16 ms | scoring 8x128 fp32 / bf16 ms | "
          "decode fp32 / bf16 tok/s | ppl fp32 / bf16 | ppl change |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['width']:g} | {r['ttft_b1_fp32_ms']:.2f} / {r['ttft_b1_bf16_ms']:.2f} | "
              f"{r['ttft_b8_fp32_ms']:.2f} / {r['ttft_b8_bf16_ms']:.2f} | "
              f"{r['prefill_b8_fp32_ms']:.1f} / {r['prefill_b8_bf16_ms']:.1f} | "
              f"{r['decode_fp32_tok_s']:.0f} / {r['decode_bf16_tok_s']:.0f} | "
              f"{r['ppl']['fp32']:.2f} / {r['ppl']['bf16']:.2f} | {r['ppl_change']:+.2%} |")
    good = [f"{r['width']:g}" for r in rows if r["bf16_qualifies"]]
    print(f"\nbf16 is faster (TTFT 1x128) with ppl within {INFERENCE_PPL_TOLERANCE:.1%} at widths: "
          f"{', '.join(good) if good else 'none'}")


if __name__ == "__main__":
    main()

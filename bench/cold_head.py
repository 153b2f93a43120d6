"""Time to first token at batch 1, each student's weights cold and hot: why the what-if prices a call as cold.

  python -m bench.cold_head cached_runs/shakespeare-nml-depth [--threads 1] [--repeats 25] [--write]

`bench` interleaves every model's calls, so each call finds the caches full of the others' weights and logits; a
generated token re-reads what the token before it read. Per (width, depth) of the run, the same prefill (1 x 128
tokens, KV cache, last position's logits) is timed cold (after latency.evict_caches, untimed) and hot (right after
an untimed call of its own), all interleaved (latency.interleaved_timings); medians. Beside each gap, what the
what-if charges for the LM head's weight read cold rather than re-read (this device's profile in
cached_runs/device_profiles: gemv_cold_by_k against gemv_by_k); the rest of the gap is the framework's own code and
data run cold, which the profile's host costs now include (profile._host_costs). --write keeps
bench/results/cold_head-<device key>.json (rendered into BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nml_core.analysis.latency import evict_caches, interleaved_timings, prefill_fn
from nml_core.device import device_info, set_threads
from nml_core.docs import cold_head_report
from nml_core.analysis.profile import GPT2_VOCAB
from nml_core.analysis.device_profile import load_profiles
from nml_core.files import atomic_write_json
from nml_core.nesting.depth import subnets
from nml_core.nesting.elastic import ElasticGPT2, extract_student
from nml_core.nesting.width import WidthSpec
from nml_core.store.models import load_run_model
from nml_core.store.runs import load_run

ROOT = Path(__file__).resolve().parent.parent


def cold_and_hot(run_path: str, repeats: int, warmup: int = 3) -> list[dict]:
    """One row per (width, depth): the median ms of its time to first token cold and hot, and its head's MB."""
    run = load_run(run_path)
    model = load_run_model(run)[0].eval()
    elastic = ElasticGPT2(model, run.axes, run.layer_rank).eval()
    fns = {}
    for w, d in subnets(run.widths, run.depths):
        s = extract_student(model, WidthSpec(w, run.axes), elastic.dims(w, d).layers).eval()
        call = prefill_fn(lambda x, s=s: s(input_ids=x, use_cache=True, logits_to_keep=1), 1, model.config, "cpu")
        fns[f"{w}/{d}/cold"] = fns[f"{w}/{d}/hot"] = call
    evict = evict_caches()
    times = interleaved_timings(fns, "cpu", repeats, warmup,
                                before=lambda name: evict() if name.endswith("/cold") else fns[name]())
    rows = []
    for w, d in subnets(run.widths, run.depths):
        k = WidthSpec(w, run.axes).dims(model.config).n_embd
        rows.append({"width": w, "depth": d, "head_k": k, "head_mb": round(model.config.vocab_size * k * 4 / 1e6, 1),
                     "cold_ms": times[f"{w}/{d}/cold"]["median_ms"], "hot_ms": times[f"{w}/{d}/hot"]["median_ms"]})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a run directory with weights")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=25, help="timed rounds (each times every shape cold and hot)")
    ap.add_argument("--write", action="store_true", help="keep the results in bench/results/")
    a = ap.parse_args()
    threads = set_threads(a.threads)
    rows = cold_and_hot(a.run, a.repeats)
    info = device_info("cpu", threads)
    prof = load_profiles(ROOT / "cached_runs").get(info["device_key"])
    for r in rows:  # what the what-if charges for the head's weight read cold rather than re-read
        mb = r["head_mb"] * (1 + 1 / GPT2_VOCAB)  # the weight and the one input row
        r["projected_head_gap_ms"] = round(mb / prof.head_read_gbs(r["head_k"], cold=True)
                                           - mb / prof.head_read_gbs(r["head_k"]), 3) if prof else None
    res = {"device": info, "run": Path(a.run).name, "repeats": a.repeats, "rows": rows,
           "command": f"python -m bench.cold_head {a.run} --threads {threads} --repeats {a.repeats} --write"}
    print(cold_head_report(res))
    if a.write:
        path = ROOT / "bench" / "results" / f"cold_head-{res['device']['device_key']}.json"
        atomic_write_json(path, res)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""The hardware what-if: device profiles, projections from a model's own ops, memory, budgets, bad profiles."""
import json

import pytest
import torch

from transformers import GPT2LMHeadModel

from nml_core.analysis import whatif
from nml_core.analysis.memory import peak_allocated_mb
from nml_core.analysis.device_profile import DeviceProfile
from nml_core.analysis.profile import HEAD_K, profile_device
from nml_core.analysis.device_profile import check_profile, load_profiles, save_profile
from nml_core.analysis.presets import PRESETS, preset_base, preset_profile
from nml_core.arch.gpt2 import cost
from nml_core.errors import NMLError
from nml_core.nesting.elastic import extract_student
from nml_core.nesting.width import ALL_AXES, WidthSpec
from conftest import tiny_config

CFG = tiny_config(vocab_size=50257, n_positions=128)
WIDTHS = [1.0, 0.5, 0.25, 0.125]


def cpu_profile_json(**kw) -> dict:
    """A synthetic measured CPU profile as stored (the numbers of a small 2-core machine)."""
    table = [[2e3, 0.5], [5e5, 40.0], [5e7, 300.0], [3e9, 300.0], [3e10, 150.0]]
    prof = {"version": 1, "kind": "measured", "device": "cpu", "device_name": "test CPU", "threads": 2,
            "device_key": "cpu-test-2t", "torch": torch.__version__, "prefill": {"fixed_us": 250.0, "per_layer_us": 150.0},
            "decode": {"fixed_us": 500.0, "per_layer_us": 200.0}, "ops_per_layer": 77, "ops_fixed": 46,
            "matmul_fp32": table, "bandwidth_gbs": 8.0, "read_gbs": 15.0, "write_gbs": 8.0,
            "fresh_write_gbs": 2.5, "fresh_output_gbs": 2.5, "asynchronous": False}
    return {**prof, **kw}


def cpu_profile(**kw) -> DeviceProfile:
    return DeviceProfile.from_json(cpu_profile_json(**kw))


def dims(w):
    return WidthSpec(w, ALL_AXES).dims(CFG)


def profiles():
    base = cpu_profile()
    return [base] + [preset_profile(name, base) for name in PRESETS]


@pytest.mark.parametrize("prof", profiles(), ids=lambda p: p.device_name)
def test_smaller_widths_are_never_projected_slower(prof):
    for batch in (1, 8, 32):
        times = [whatif.forward_us(prof, CFG, dims(w), batch, 128) for w in WIDTHS]
        assert times == sorted(times, reverse=True), (batch, times)
    decode = [whatif.project(prof, CFG, dims(w))["decode_ms"] for w in WIDTHS]
    assert decode == sorted(decode, reverse=True)


def test_a_gpu_is_launch_bound_at_batch_1_and_pays_off_at_larger_batches():
    h100 = preset_profile("NVIDIA H100 SXM", cpu_profile())
    b1 = [whatif.forward_us(h100, CFG, dims(w), 1, 128) for w in WIDTHS]
    assert b1[0] / b1[-1] < 1.1, "every width costs about the same: the host side"
    first = whatif.speedup_batch(h100, CFG, dims(1.0), dims(0.125))
    assert first is not None and first > 1
    lesson = whatif.lesson(h100, CFG, ALL_AXES, [{"width": w} for w in WIDTHS], 1, workload="prefill")
    assert "launch-bound" in lesson and f"from batch {first} on" in lesson


def test_on_a_cpu_the_lm_head_caps_small_widths_when_scoring():
    prof = cpu_profile()
    small = whatif.breakdown(prof, CFG, dims(0.125), 8, 128)
    assert small["head_us"] > small["layers_us"], "the vocab-sized head outweighs the 1/8 model's layers"
    family = [{"width": w} for w in WIDTHS]
    text = whatif.lesson(prof, CFG, ALL_AXES, family, 8, workload="prefill")
    assert "LM head caps small widths" in text and "GFLOP/s" not in text, "no head rate the profile did not measure"
    measured = cpu_profile(head_fp32=[[8, 5.0], [64, 40.0]])  # CFG's widths 1 and 1/8: inner dims 64 and 8
    text = whatif.lesson(measured, CFG, ALL_AXES, family, 8, workload="prefill")
    assert "at 5 GFLOP/s at width 0.125 (inner dimension 8) against 40 at width 1" in text


def test_time_to_first_token_skips_the_logits_of_all_but_the_last_position():
    """Generation's prefill: the head over one position, so on a CPU small widths approach their FLOP ratio,
    where scoring (all logits) stays capped by the LM head over every position."""
    prof = cpu_profile()
    for w in WIDTHS:
        proj = whatif.project(prof, CFG, dims(w), batches=(1, 8))
        assert proj["ttft_b8_ms"] < proj["prefill_b8_ms"] and proj["ttft_b1_ms"] < proj["prefill_b1_ms"]
    speedup = {k: whatif.forward_us(prof, CFG, dims(1.0), 8, 128, kind=k) /
               whatif.forward_us(prof, CFG, dims(0.125), 8, 128, kind=k) for k in whatif.WORKLOADS}
    assert speedup["ttft"] > speedup["prefill"]
    text = whatif.lesson(prof, CFG, ALL_AXES, [{"width": w} for w in WIDTHS], 8, workload="ttft")
    assert "last position only" in text and "head caps" not in text


def test_device_points_take_the_chosen_workload_measured_where_the_file_has_it():
    prof = cpu_profile()
    points = [{"width": 1.0, "ttft_b1_ms": 7.0, "prefill_b1_ms": 11.0, "decode_tok_s": 100.0},
              {"width": 0.5, "prefill_b1_ms": 6.0, "decode_tok_s": 150.0}]  # an older file: no ttft
    choice = whatif.DeviceChoice("cpu-test-2t", "measured", "test CPU", "test CPU (2 threads) — measured", prof)
    ttft = whatif.device_points(points, CFG, ALL_AXES, choice, 1, workload="ttft")
    assert ttft[0]["prefill_ms"] == 7.0 and ttft[0]["prefill_measured"]
    assert not ttft[1]["prefill_measured"] and ttft[1]["prefill_ms"] == pytest.approx(
        whatif.project(prof, CFG, dims(0.5))["ttft_b1_ms"])
    scoring = whatif.device_points(points, CFG, ALL_AXES, choice, 1, workload="prefill")
    assert [p["prefill_ms"] for p in scoring] == [11.0, 6.0]


def test_decode_is_never_faster_than_reading_the_weights():
    h100 = preset_profile("NVIDIA H100 SXM", cpu_profile())
    for w in WIDTHS:
        assert whatif.project(h100, CFG, dims(w))["decode_ms"] * 1e3 >= \
            cost(CFG, dims(w))["params"] * 4 / (h100.read_gbs * 1e3)


def test_a_slow_matrix_vector_read_slows_decode_and_not_the_prefill():
    """gemv_gbs (the BLAS's weight-read rate at M = 1) prices the decode's products; a profile without it keeps
    read_gbs; a scored 8x128 prefill (M = 1024) does not read through it."""
    base, slow = cpu_profile(), cpu_profile(gemv_gbs=3.0)
    assert whatif.project(cpu_profile(gemv_gbs=15.0), CFG, dims(1.0)) == whatif.project(base, CFG, dims(1.0))
    fast_p, slow_p = whatif.project(base, CFG, dims(1.0)), whatif.project(slow, CFG, dims(1.0))
    assert slow_p["decode_ms"] > 1.5 * fast_p["decode_ms"] and slow_p["prefill_b8_ms"] == fast_p["prefill_b8_ms"]


def test_presets_take_their_host_from_the_fastest_measured_cpu_whatever_the_names():
    fast = cpu_profile(device_key="cpu-zzz-1t", prefill={"fixed_us": 100.0, "per_layer_us": 50.0})
    slow = cpu_profile(device_key="cpu-aaa-1t")
    assert preset_base({"cpu-aaa-1t": slow, "cpu-zzz-1t": fast}) is fast
    assert preset_base({"cpu-zzz-1t": fast}) is fast and preset_base({}) is None
    gpu = cpu_profile(device_key="cuda-x", device="cuda", prefill={"fixed_us": 1.0, "per_layer_us": 1.0})
    assert preset_base({"cuda-x": gpu, "cpu-aaa-1t": slow}) is slow  # a GPU's host is not a CPU preset's base


def test_host_costs_are_the_median_of_the_profile_passes():
    """One disturbed pass (a neighbour on a shared VM) moves no host cost: each field is the passes' median."""
    from nml_core.analysis.profile import _median_pass
    passes = [{"prefill": {"fixed_us": 200.0, "per_layer_us": 110.0}},
              {"prefill": {"fixed_us": 430.0, "per_layer_us": 260.0}},
              {"prefill": {"fixed_us": 180.0, "per_layer_us": 120.0}}]
    assert _median_pass(passes) == {"prefill": {"fixed_us": 200.0, "per_layer_us": 120.0}}


def test_a_faster_device_is_projected_faster():
    base = cpu_profile()
    a100, pi = preset_profile("NVIDIA A100 40GB", base), preset_profile("Raspberry Pi 5", base)
    for w in WIDTHS:
        assert whatif.forward_us(a100, CFG, dims(w), 8, 128) < whatif.forward_us(pi, CFG, dims(w), 8, 128)


def test_presets_say_which_fields_are_assumed():
    p = preset_profile("NVIDIA T4", cpu_profile())
    assert p.kind == "preset" and p.fields["matmul_fp32"].startswith("assumed")
    assert p.fields["ops_per_layer"] == "measured" and p.based_on == "cpu-test-2t"


def test_memory_counts_weights_kv_cache_and_activations():
    one, many = whatif.memory_mb(CFG, dims(0.5), 1, 128), whatif.memory_mb(CFG, dims(0.5), 32, 128)
    assert one["weights_mb"] == many["weights_mb"] == cost(CFG, dims(0.5))["params"] * 4 / 1e6
    assert many["kv_cache_mb"] == pytest.approx(32 * one["kv_cache_mb"])
    assert many["memory_mb"] > one["memory_mb"] > one["weights_mb"]


def test_rate_interpolates_inside_the_table_and_extends_time_outside_it():
    prof = cpu_profile(matmul_fp32=[[1e3, 1.0], [1e5, 100.0], [1e7, 1000.0]])
    assert whatif.rate_gflops(prof, 1e4) == pytest.approx(10.0)
    # below the smallest size: that kernel's time is a floor (1e3 FLOPs at 1 GFLOP/s = 1 us)
    assert 10 / whatif.rate_gflops(prof, 10) == pytest.approx(1e3)
    # above the largest: time grows at the last step's marginal rate, so the rate keeps rising, never clamped
    marginal = (1e7 - 1e5) / (1e7 / 1000.0 - 1e5 / 100.0)
    t = 1e7 / 1000.0 + (1e9 - 1e7) / marginal
    assert whatif.rate_gflops(prof, 1e9) == pytest.approx(1e9 / t) and whatif.rate_gflops(prof, 1e9) > 1000.0


def test_a_gpu_presets_rate_holds_past_the_base_profiles_sizes():
    """The GPU preset's rate is its model at every size, whatever sizes the CPU profile under it measured."""
    h100 = preset_profile("NVIDIA H100 SXM", cpu_profile())
    sustained = PRESETS["NVIDIA H100 SXM"]["peak_gflops"] / 2
    huge = 2 * 16384 * 768 * 50257  # a batch-128 GPT-2-small LM head, far past the CPU table's 3e10 FLOPs
    assert whatif.rate_gflops(h100, huge) == pytest.approx(sustained, rel=0.01)
    assert whatif.rate_gflops(h100, 3e10) < whatif.rate_gflops(h100, huge)


@pytest.mark.parametrize("name", [n for n, s in PRESETS.items() if not s["cpu"]])
def test_a_gpu_at_large_batch_is_projected_near_its_flop_time(name):
    """GPT-2 small at batch 128 x 128 on a GPU preset: close to FLOPs / sustained rate (+ logits write), not
    several times over it (per-head attention matmuls are one batched kernel on a GPU, not one kernel each)."""
    from transformers import GPT2Config
    g = GPT2Config()
    gpu = preset_profile(name, cpu_profile())
    flops_ms = cost(g, WidthSpec(1.0, ALL_AXES).dims(g), 128)["flops_per_token"] * 128 * 128 / \
        (PRESETS[name]["peak_gflops"] / 2) / 1e6
    projected_ms = whatif.forward_us(gpu, g, WidthSpec(1.0, ALL_AXES).dims(g), 128, 128) / 1e3
    assert flops_ms <= projected_ms <= 1.5 * flops_ms, (projected_ms, flops_ms)


def test_h200_and_l4_presets_exist_with_their_vendor_figures():
    assert PRESETS["NVIDIA H200"]["bandwidth_gbs"] == 4800.0 and PRESETS["NVIDIA L4"]["peak_gflops"] == 30_300.0
    h200, h100 = (preset_profile(n, cpu_profile()) for n in ("NVIDIA H200", "NVIDIA H100 SXM"))
    # the same fp32 peak, a faster memory: never projected slower than the H100
    assert whatif.project(h200, CFG, dims(1.0))["decode_ms"] <= whatif.project(h100, CFG, dims(1.0))["decode_ms"]


def test_budget_picks_the_best_width_that_fits():
    rows = [{"width": w, "ppl": ppl, "prefill_ms": ms, "memory_mb": mb}
            for w, ppl, ms, mb in [(1.0, 100, 40, 90), (0.5, 130, 22, 40), (0.25, 200, 14, 20), (0.125, 400, 10, 9)]]
    assert whatif.best_within_budget(rows, "prefill_ms", None, None)["width"] == 1.0
    assert whatif.best_within_budget(rows, "prefill_ms", 25.0, None)["width"] == 0.5
    assert whatif.best_within_budget(rows, "prefill_ms", None, 10.0)["width"] == 0.125
    assert whatif.best_within_budget(rows, "prefill_ms", 1.0, None) is None


@pytest.mark.parametrize("edit, words", [(lambda p: p.pop("matmul_fp32"), "not a device profile"),
                                         (lambda p: p.update(torch="1.13.1"), "measured with torch 1.13.1")])
def test_a_bad_profile_is_one_line_and_never_used(tmp_path, edit, words):
    prof = cpu_profile_json()
    edit(prof)
    with pytest.raises(NMLError, match=words):
        check_profile(prof)
    (tmp_path / "device_profiles").mkdir()
    (tmp_path / "device_profiles" / "x.json").write_text(json.dumps(prof))
    (tmp_path / "device_profiles" / "y.json").write_text("{corrupt")
    assert load_profiles(tmp_path) == {}, "the page falls back to no projection rather than a wrong number"


def test_profile_device_measures_this_cpu(tmp_path, monkeypatch, capfd):
    from nml_core.training import precision  # the bf16 probe at a small size (tests/test_precision has it whole)
    monkeypatch.setattr(precision, "PROBE_SHAPE", dict(n_layer=1, n_embd=32, n_head=2, n_positions=16))
    monkeypatch.setattr(precision, "PROBE_BATCH", (2, 16))
    from nml_core.analysis import profile
    monkeypatch.setattr(profile, "HEAD_K", HEAD_K[:2])  # the LM-head tables at two inner dims (the 1024-row ones take s)
    real_evict, evictions = profile.evict_caches, []

    def counted_evict():
        evict = real_evict()
        return lambda: (evictions.append(1), evict())
    monkeypatch.setattr(profile, "evict_caches", counted_evict)
    prof = profile_device("cpu", threads=1, repeats=3)
    # every timed host-cost call after an eviction: 3 kinds x 2 tiny models x 3 * repeats rounds, per pass
    assert len(evictions) == profile.HOST_PASSES * 3 * 2 * 9 and prof.host_evicted
    check_profile(prof.to_json())
    assert prof.threads == 1 and prof.device_key.endswith("-1t") and prof.ops_per_layer > 10
    assert prof.prefill.per_layer_us > 0 and prof.bandwidth_gbs > 0 and prof.gemv_gbs > 0
    assert [k for k, _ in prof.head_fp32] == list(HEAD_K[:2]) and all(r > 0 for _, r in prof.head_fp32)
    assert [k for k, _ in prof.gemv_by_k] == list(HEAD_K[:2]) and all(r > 0 for _, r in prof.gemv_by_k)
    assert [k for k, _ in prof.gemv_cold_by_k] == list(HEAD_K[:2]) and all(r > 0 for _, r in prof.gemv_cold_by_k)
    assert [k for k, _ in prof.head_b8_fp32] == list(HEAD_K[:2]) and all(r > 0 for _, r in prof.head_b8_fp32)
    assert all(r > 0 for _, r in prof.matmul_fp32) and set(prof.fields.values()) == {"measured"}
    assert profile.outdated(prof) == (), "a profile measured now lacks nothing the projection reads"
    assert "profiler_start" not in capfd.readouterr().err, "torch's profiler lines stay out of the command's output"
    path = save_profile(prof, tmp_path)
    assert load_profiles(tmp_path)[prof.device_key] == prof and path.exists(), "it reads back as it was measured"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("vocab,ctx,batch", [(50257, 128, 2),   # the logits dominate (GPT-2's vocabulary)
                                             (64, 1024, 4)])    # a layer's activations dominate
def test_memory_model_matches_the_bytes_a_prefill_allocates(device, vocab, ctx, batch):
    cfg = tiny_config(vocab_size=vocab, n_positions=ctx)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).eval()
    x = torch.randint(0, vocab, (batch, ctx), device=device)
    for w in (1.0, 0.5):
        student = extract_student(model, WidthSpec(w, ALL_AXES)).eval().to(device)

        def prefill():
            with torch.inference_mode():
                student(input_ids=x, use_cache=True)

        prefill()  # warm-up: one-time workspaces (cuBLAS) are not the model's memory
        projected = whatif.memory_mb(cfg, WidthSpec(w, ALL_AXES).dims(cfg), batch, ctx)
        measured = peak_allocated_mb(prefill, device)
        assert projected["kv_cache_mb"] + projected["activations_mb"] == pytest.approx(measured, rel=0.2 if device == "cuda" else 0.05)


def test_a_gpu_profile_from_another_torch_still_loads(tmp_path):
    """A GPU profile came home from a machine we no longer hold: it stays listed, with the torch it names."""
    gpu = cpu_profile(device="cuda", device_key="cuda-test-gpu", torch="2.11.0+cu130", asynchronous=True)
    save_profile(gpu, tmp_path)
    save_profile(cpu_profile(torch="1.13.1"), tmp_path)
    assert list(load_profiles(tmp_path)) == ["cuda-test-gpu"]


def test_a_measured_head_rate_prices_batch_1_scoring_by_its_inner_dim():
    """A profile's head_fp32 (the 128-token scoring LM head's rate by inner dim K) prices that head, and only it:
    time to first token and batch-8 scoring (logits past FRESH_BYTES) keep their costs; a profile without the
    table keeps the size-indexed rate."""
    table = [[32, 10.0], [64, 20.0], [256, 80.0]]
    plain, measured = cpu_profile(), cpu_profile(head_fp32=table)
    for w, k in ((1.0, 64), (0.5, 32)):
        head = whatif.breakdown(measured, CFG, dims(w), 1, 128)["head_us"]
        assert head == pytest.approx(2 * 128 * k * 50257 / (dict(table)[k] * 1e3))
        for batch, kind in ((1, "ttft"), (8, "prefill"), (8, "ttft")):
            assert whatif.forward_us(measured, CFG, dims(w), batch, 128, kind=kind) == \
                   whatif.forward_us(plain, CFG, dims(w), batch, 128, kind=kind)
    mid = whatif.breakdown(measured, CFG, dims(1.0), 1, 128)["head_us"]  # K = 64: between the table's entries
    assert whatif.breakdown(cpu_profile(head_fp32=[[32, 10.0], [128, 40.0]]), CFG, dims(1.0), 1, 128)["head_us"] == \
           pytest.approx(mid)  # log-log: the rate doubles with K in both tables
    assert whatif.breakdown(plain, CFG, dims(0.5), 1, 128)["head_us"] != \
           whatif.breakdown(measured, CFG, dims(0.5), 1, 128)["head_us"]


@pytest.mark.parametrize("name,family,model,expected", [
    ("AMD EPYC", "25", "17", "AMD EPYC (family 25, model 17)"),         # a VM's name: Zen 4 and Zen 5 alike
    ("Intel(R) Xeon(R) Processor", "6", "143", "Intel(R) Xeon(R) Processor (family 6, model 143)"),
    ("AMD EPYC 9654 96-Core Processor", "25", "17", "AMD EPYC 9654 96-Core Processor"),  # names its model
    ("AMD EPYC", None, None, "AMD EPYC")])                              # no family to add
def test_two_cpus_never_share_a_device_key(monkeypatch, name, family, model, expected):
    from nml_core import device
    fields = {"model name": name, "cpu family": family, "model": model}
    monkeypatch.setattr(device, "_cpuinfo", fields.get)
    assert device.cpu_name() == expected
    assert device.device_info("cpu", 2)["device_key"].startswith("cpu-" + expected.split(" (")[0][:3].lower())


def test_renaming_a_cpus_files_moves_them_to_the_new_key_and_never_overwrites(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    (tmp_path / "run" / "latency").mkdir(parents=True)
    (tmp_path / "device_profiles").mkdir()
    old = {"device_name": "AMD EPYC", "device_key": "cpu-amd-epyc-2t", "widths": []}
    (tmp_path / "run" / "latency" / "cpu-amd-epyc-2t.json").write_text(json.dumps(old))
    (tmp_path / "device_profiles" / "cpu-amd-epyc-1t.json").write_text(json.dumps({**old, "device_key": "cpu-amd-epyc-1t"}))
    (tmp_path / "run" / "latency" / "cpu-amd-epyc-2t-bf16.json").write_text(json.dumps({**old, "device_key": "cpu-amd-epyc-2t-bf16"}))
    (tmp_path / "device_profiles" / "cpu-amd-epyc-other-1t.json").write_text("{}")  # another CPU: left alone
    cmd = [sys.executable, str(repo / "scripts" / "rename_cpu_device.py"), "cpu-amd-epyc", "26", "2", "--roots", str(tmp_path)]
    env = {"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"}
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    moved = json.loads((tmp_path / "run" / "latency" / "cpu-amd-epyc-family-26-model-2-2t.json").read_text())
    assert moved == {**old, "device_name": "AMD EPYC (family 26, model 2)", "device_key": "cpu-amd-epyc-family-26-model-2-2t"}
    assert (tmp_path / "device_profiles" / "cpu-amd-epyc-family-26-model-2-1t.json").exists()
    bf16 = json.loads((tmp_path / "run" / "latency" / "cpu-amd-epyc-family-26-model-2-2t-bf16.json").read_text())
    assert bf16["device_key"] == "cpu-amd-epyc-family-26-model-2-2t-bf16", "a bf16 report keeps its -bf16 key"
    assert sorted(p.name for p in tmp_path.rglob("*.json")) == [
        "cpu-amd-epyc-family-26-model-2-1t.json", "cpu-amd-epyc-family-26-model-2-2t-bf16.json",
        "cpu-amd-epyc-family-26-model-2-2t.json", "cpu-amd-epyc-other-1t.json"]
    (tmp_path / "device_profiles" / "cpu-amd-epyc-1t.json").write_text(json.dumps(old))  # its target exists now
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.json")}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "exists already" in r.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.json")} == before, "nothing renamed"


def test_on_a_gpu_the_last_kernel_is_not_hidden_behind_the_host():
    """The host's launches overlap the layers' kernels, but the LM head, issued last, runs after the host is done:
    launch-bound at batch 1 (host side + head), device-bound at a large batch (layers + head)."""
    h100 = preset_profile("NVIDIA H100 SXM", cpu_profile())
    small = whatif.breakdown(h100, CFG, dims(1.0), 1, 128)
    assert small["host_us"] > small["layers_us"] and small["total_us"] == pytest.approx(small["host_us"] + small["head_us"])
    from transformers import GPT2Config
    gpt2 = GPT2Config()  # GPT-2 small: its layers outgrow the host side at batch 64
    large = whatif.breakdown(h100, gpt2, WidthSpec(1.0, ALL_AXES).dims(gpt2), 64, 128)
    assert large["layers_us"] > large["host_us"]
    assert large["total_us"] == pytest.approx(large["layers_us"] + large["head_us"])
    cpu = whatif.breakdown(cpu_profile(), CFG, dims(1.0), 1, 128)
    assert cpu["total_us"] == pytest.approx(cpu["host_us"] + cpu["layers_us"] + cpu["head_us"]), "a CPU adds all three"


def test_a_generated_tokens_head_reads_at_the_rate_measured_for_its_inner_dim():
    """gemv_by_k (the matrix-vector LM head's weight re-read call after call, by K) prices the decode head, which
    the token before read; the batch-1 time-to-first-token head is read once per prefill, cold (gemv_cold_by_k,
    else gemv_gbs); scoring's and the layers' products keep their rates."""
    by_k = [[32, 30.0], [64, 30.0], [128, 6.0], [256, 6.0]]
    plain, measured = cpu_profile(gemv_gbs=15.0), cpu_profile(gemv_gbs=15.0, gemv_by_k=by_k)
    for w, k in ((1.0, 64), (0.5, 32)):
        got = whatif.breakdown(measured, CFG, dims(w), 1, 1, past=16, kind="decode")
        was = whatif.breakdown(plain, CFG, dims(w), 1, 1, past=16, kind="decode")
        read, write = 4 * (k + k * 50257) / (dict(by_k)[k] * 1e3), 4 * 50257 / (8.0 * 1e3)  # + the logits written
        assert got["head_us"] == pytest.approx(read + write)
        assert got["head_us"] < was["head_us"] and got["layers_us"] == was["layers_us"]
        assert whatif.forward_us(measured, CFG, dims(w), 1, 128) == whatif.forward_us(plain, CFG, dims(w), 1, 128)
        ttft = whatif.breakdown(measured, CFG, dims(w), 1, 128, kind="ttft")
        assert ttft == whatif.breakdown(plain, CFG, dims(w), 1, 128, kind="ttft"), "the cold read, not the table"
        assert ttft["head_us"] == pytest.approx(4 * (k + k * 50257) / (15.0 * 1e3) + write)
        cold = cpu_profile(gemv_gbs=15.0, gemv_by_k=by_k, gemv_cold_by_k=[[32, 12.0], [64, 12.0], [128, 5.0]])
        got = whatif.breakdown(cold, CFG, dims(w), 1, 128, kind="ttft")
        assert got["head_us"] == pytest.approx(4 * (k + k * 50257) / (12.0 * 1e3) + write)
        assert whatif.breakdown(cold, CFG, dims(w), 1, 1, past=16, kind="decode")["head_us"] == pytest.approx(read + write)
    assert measured.head_read_gbs(48) == pytest.approx(30.0) and measured.head_read_gbs(1024) == 6.0


def test_batch_8_scoring_reads_the_head_measured_at_1024_rows_and_between_them_by_rows():
    """head_b8_fp32 (the head over 1024 rows, its new output's page faults included) prices batch-8 scoring; a batch
    between 1 and 8 takes a rate between the two tables', log-log by rows; without it batch 8 keeps the old rule."""
    one, eight = [[32, 10.0], [64, 20.0]], [[32, 40.0], [64, 80.0]]
    plain, both = cpu_profile(head_fp32=one), cpu_profile(head_fp32=one, head_b8_fp32=eight)
    for w, k in ((1.0, 64), (0.5, 32)):
        b8 = whatif.breakdown(both, CFG, dims(w), 8, 128)["head_us"]
        assert b8 == pytest.approx(2 * 1024 * k * 50257 / (dict(eight)[k] * 1e3))
        b1 = whatif.breakdown(both, CFG, dims(w), 1, 128)["head_us"]
        assert b1 == whatif.breakdown(plain, CFG, dims(w), 1, 128)["head_us"]
        b2 = whatif.breakdown(both, CFG, dims(w), 2, 128)["head_us"]
        # the rate grows 4x over 8x the rows, so 4 ** (1/3) at twice the rows (log-log)
        assert b2 == pytest.approx(2 * 256 * k * 50257 / (dict(one)[k] * 4 ** (1 / 3) * 1e3))
        assert whatif.breakdown(plain, CFG, dims(w), 8, 128)["head_us"] == \
               whatif.breakdown(cpu_profile(), CFG, dims(w), 8, 128)["head_us"]


def test_the_accuracy_check_can_read_the_profiles_without_a_field():
    """bench/whatif_accuracy.py --without: the same measurements projected as if the profiles lacked a field — it
    moves only the rows of profiles that have it, and only the measures that field prices."""
    from pathlib import Path
    from bench.whatif_accuracy import check
    root = str(Path(__file__).resolve().parent.parent / "cached_runs")
    key = lambda r: (r["run"], r["device"], r["width"], r["depth"], r["measure"])  # noqa: E731
    full, without = ({key(r): r["projected"] for r in check([root], w)} for w in ((), ("head_fp32", "head_b8_fp32")))
    moved = {k for k in full if full[k] != without[k]}
    with_table = {k for k, p in load_profiles(Path(root)).items() if p.head_fp32}
    assert moved and {k[1] for k in moved} <= with_table
    assert {k[4] for k in moved} <= {"prefill_b1_ms", "prefill_b8_ms"}


def test_a_profile_measured_before_a_field_says_what_it_lacks_and_how_to_measure_it_again():
    from nml_core.analysis.budget import BudgetAnswer
    from nml_core.analysis.profile import MATMULS, outdated
    from nml_core.report import format_budget
    table = sorted([2 * m * k * n, 50.0] for m, k, n in MATMULS)
    tables = {f: [[k, 10.0] for k in HEAD_K] for f in ("head_fp32", "head_b8_fp32", "gemv_by_k", "gemv_cold_by_k")}
    current = cpu_profile(matmul_fp32=table, gemv_gbs=10.0, ttft={"fixed_us": 200.0, "per_layer_us": 100.0},
                          host_evicted=True, **tables)
    old = cpu_profile(device_key="cpu-old-2t", device_name="old CPU", measured="2026-12-01T08:00:00+0000",
                      matmul_fp32=[r for r in table if r[0] != 2 * 128 * 64 * 256])  # before the LM-head tables too
    assert outdated(current) == () and outdated(preset_profile("NVIDIA H100 SXM", current)) == ()
    assert outdated(old) == ("ttft", "host_evicted", "gemv_gbs", "gemv_by_k", "gemv_cold_by_k", "head_fp32", "head_b8_fp32",
                             f"1 of the {len(MATMULS)} matmul_fp32 shapes")
    choices = {c.key: c for c in whatif.device_choices([], {"cpu-old-2t": old, "cpu-test-2t": current})}
    note = choices["cpu-old-2t"].outdated_note()
    assert "old CPU" in note and "2026-12-01" in note and "head_fp32" in note and note.endswith("profile-device --threads 2")
    assert choices["cpu-test-2t"].outdated_note() is None
    assert all(c.outdated_note() is None for k, c in choices.items() if k not in ("cpu-old-2t",))
    point = {"width": 1.0, "depth": 1.0, "n_layer": 2, "n_head": 2, "ppl": 50.0, "ttft_b1_ms": 3.0,
             "latency_measured": False, "memory_mb": 10.0}
    answer = BudgetAnswer([point], [point], point, "ttft_b1_ms", "ttft", None, None, None, None)
    assert note in format_budget(answer, choices["cpu-old-2t"], 1, "ttft").splitlines()
    assert note not in format_budget(answer, choices["cpu-test-2t"], 1, "ttft")


def test_the_cold_head_bench_times_every_shape_cold_and_hot(nested_run):
    """bench/cold_head.py: each (width, depth) of a run timed after a cache flush and right after itself, with its
    LM head's inner dim and weight size, rendered as BENCHMARKS.md shows it."""
    from bench.cold_head import cold_and_hot
    from nml_core.docs import cold_head_report
    rows = cold_and_hot(str(nested_run), repeats=2, warmup=1)
    assert [(r["width"], r["depth"]) for r in rows] == [(w, 1.0) for w in (1.0, 0.5, 0.25, 0.125)]
    assert [r["head_k"] for r in rows] == [64, 32, 16, 8] and all(r["cold_ms"] > 0 and r["hot_ms"] > 0 for r in rows)
    res = {"device": {"device_name": "test CPU", "threads": 1}, "run": "nested", "repeats": 2, "command": "c",
           "rows": [{**r, "projected_head_gap_ms": None} for r in rows]}
    table = cold_head_report(res).splitlines()
    assert len(table) == 4 + len(rows) and table[-1].startswith("| 0.125 x 1 | 8 |") and table[-1].endswith("| — |")


def test_the_timer_runs_its_before_hook_untimed_ahead_of_every_timed_call():
    """interleaved_timings(before=...): the profile evicts the caches ahead of each host-cost call, as `bench`'s
    interleaving leaves them; the hook gets the name of the call it precedes and is not in its time."""
    import time
    from nml_core.analysis.latency import interleaved_timings
    seen = []
    times = interleaved_timings({"a": lambda: None, "b": lambda: None}, "cpu", repeats=3, warmup=1,
                                before=lambda name: (seen.append(name), time.sleep(0.02)))
    assert seen == ["a", "b", "b", "a", "a", "b"], "every timed call, in the round's order"
    assert all(t["median_ms"] < 10 for t in times.values()), "the hook's 20 ms are not timed"

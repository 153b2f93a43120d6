"""The typed records the stored files read back as: every shipped latency file and device profile round-trips
through its record unchanged, and a file that is not one is refused in one line naming the fix."""
import json
from pathlib import Path

import pytest

from nml_core.analysis.device_profile import DeviceProfile, HostCost
from nml_core.errors import NMLError
from nml_core.store.latency_report import LatencyReport
from nml_core.store.runs import load_run

ROOT = Path(__file__).resolve().parent.parent / "cached_runs"
LATENCY_FILES = sorted(ROOT.glob("*/latency/*.json"))
PROFILES = sorted((ROOT / "device_profiles").glob("c*.json"))


@pytest.mark.parametrize("path", LATENCY_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_every_shipped_latency_file_reads_back_unchanged(path):
    stored = json.loads(path.read_text())
    report = LatencyReport.from_json(stored, str(path))
    for row in stored["widths"]:
        row.setdefault("depth", 1.0)  # files written before depth existed: every layer
    assert report.to_json() == stored
    assert [r.width for r in report.rows] == [r["width"] for r in stored["widths"]]
    first = stored["widths"][0]
    assert report.rows[0].ms("prefill_b1_ms") == first["prefill_b1_ms"]["median_ms"]
    assert report.rows[0].ms("decode_ms") == pytest.approx(1e3 / first["decode_tok_s"]["median"])
    assert report.rows[0].ms("ttft_b1_ms") == (first["ttft_b1_ms"]["median_ms"] if "ttft_b1_ms" in first else None)


def test_a_run_reads_its_latency_files_as_reports():
    run = load_run(ROOT / "shakespeare-nml", require_model=False)
    reports = run.latency()
    assert reports and all(isinstance(r, LatencyReport) and r.device_key == key for key, r in reports.items())
    h200 = reports["cuda-nvidia-h200"]
    assert h200.row(0.5).n_embd == 128 and h200.row(0.3) is None and h200.where() == "cuda"


def test_a_file_that_is_not_a_latency_report_is_one_line(tmp_path):
    stored = json.loads(LATENCY_FILES[0].read_text())
    del stored["widths"][0]["n_embd"], stored["device_key"]
    with pytest.raises(NMLError, match=r"is not a latency report .*python -m nml_core bench"):
        LatencyReport.from_json(stored, "x.json")


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_shipped_profile_reads_back_unchanged(path):
    stored = json.loads(path.read_text())
    prof = DeviceProfile.from_json(stored, str(path))
    assert prof.to_json() == stored
    assert isinstance(prof.prefill, HostCost) and prof.host("ttft") == (prof.ttft or prof.prefill)
    assert prof.gemv_read_gbs == stored.get("gemv_gbs", stored["read_gbs"])


def test_a_profile_with_a_malformed_host_cost_is_one_line():
    stored = json.loads(PROFILES[0].read_text())
    stored["prefill"] = {"fixed": 1.0}
    with pytest.raises(NMLError, match="malformed field .*profile-device"):
        DeviceProfile.from_json(stored, "x.json")


def test_the_elastic_overhead_of_a_file_that_timed_the_superseded_forward_is_not_shown():
    """Files whose protocol says they timed "ElasticGPT2 views" (strided prefixes of the shared weights) say
    nothing about today's elastic forward (a stock student of contiguous copies): no overhead figure from them."""
    run = load_run(ROOT / "shakespeare-nml", require_model=False)
    old, now = run.latency()["cuda-nvidia-h100-80gb-hbm3"], run.latency()["cuda-nvidia-h200"]
    assert old.elastic_views and all(old.elastic_overhead(r) is None for r in old.rows)
    assert old.rows[1].ms("elastic_prefill_b1_ms")  # the timing itself is kept, as measured
    assert not now.elastic_views
    row = now.rows[1]
    assert now.elastic_overhead(row) == pytest.approx(row.ms("elastic_prefill_b1_ms") / row.ms("prefill_b1_ms") - 1)


def test_the_devices_a_page_can_pick_are_typed_measured_first_each_projection_with_its_error():
    from nml_core.analysis.device_profile import load_profiles, load_whatif_errors
    from nml_core.analysis.whatif import DeviceChoice, ErrorBand, device_choices
    run = load_run(ROOT / "shakespeare-nml", require_model=False)
    choices = device_choices([run], load_profiles(ROOT), load_whatif_errors(ROOT))
    assert all(isinstance(c, DeviceChoice) for c in choices)
    kinds = [c.measured for c in choices]
    assert kinds == sorted(kinds, reverse=True) and set(run.latency()) == {c.key for c in choices if c.measured}
    projected = [c for c in choices if not c.measured]
    assert projected and all(isinstance(c.error, ErrorBand) and f"± {c.error.median:.0%}" in c.label for c in projected)
    h100 = next(c for c in choices if c.key == "cuda-nvidia-h100-80gb-hbm3")
    assert h100.provenance and h100.profile.kind == "preset", "a reference file's gaps are projected from its preset"

import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

from nml_core import api
from nml_core.nesting.elastic import ElasticGPT2
from nml_core.store.runs import load_run


def test_exported_student_loads_without_nml_core_and_matches_elastic_forward(nested_run, tmp_path):
    out = api.export(nested_run, 0.25, tmp_path / "student")
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in out.iterdir()}
    x = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
        m = AutoModelForCausalLM.from_pretrained({str(out)!r}, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained({str(out)!r})
        assert tok("Hello world")["input_ids"] == [15496, 995]
        with torch.no_grad():
            logits = m(input_ids=torch.load({str(tmp_path / 'x.pt')!r})).logits
        assert not any(k.startswith("nml_core") for k in sys.modules), "nml_core was imported"
        save_file({{"logits": logits.contiguous()}}, {str(tmp_path / 'logits.safetensors')!r})
        print(type(m).__name__, m.config.n_embd, m.config.n_head)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["GPT2LMHeadModel", "16", "2"]
    model, _ = api.load_run_model(load_run(nested_run))
    with torch.no_grad():
        expected = ElasticGPT2(model).eval()(x, width=0.25).logits
    torch.testing.assert_close(load_file(str(tmp_path / "logits.safetensors"))["logits"], expected, atol=1e-4, rtol=1e-4)


def test_export_replaces_only_what_an_export_wrote(nested_run, tmp_path):
    """A second export into the same folder replaces the first (it carries nml's marker); a user's own model
    folder, or any folder with files, is refused and left exactly as it was."""
    from nml_core.errors import NMLError
    from nml_core.store.export import EXPORT_MARK
    out = api.export(nested_run, 0.5, tmp_path / "student")
    assert (out / EXPORT_MARK).exists()
    api.export(nested_run, 0.25, out)  # ours: replaced
    assert '"n_head": 2' in (out / "config.json").read_text()
    mine = tmp_path / "my-model"
    mine.mkdir()
    (mine / "config.json").write_text('{"model_type": "gpt2"}')
    (mine / "model.safetensors").write_bytes(b"my weights")
    try:
        api.export(nested_run, 0.5, mine)
        raise AssertionError("a user's model folder was overwritten")
    except NMLError as e:
        assert "did not write" in str(e)
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "model.safetensors"]
    assert (mine / "model.safetensors").read_bytes() == b"my weights"


def test_a_run_never_moves_into_a_folder_of_someone_elses_files(teacher_run, tmp_path):
    from nml_core.errors import NMLError
    from nml_core.nesting.width import parse_axes
    from nml_core.training.config import TrainConfig
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "draft.txt").write_text("mine")
    try:
        api.train_nested(folder, str(teacher_run), None, [1.0, 0.5], parse_axes(None), TrainConfig(steps=1, ctx=32))
        raise AssertionError("trained into a user's folder")
    except NMLError as e:
        assert "non-empty folder" in str(e)
    assert [p.name for p in folder.iterdir()] == ["draft.txt"]

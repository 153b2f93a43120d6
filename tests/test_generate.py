import torch

from nml_core.analysis.generate import diagnose, generate_ids
from nml_core.nesting.elastic import ElasticGPT2, extract_student
from nml_core.nesting.width import WidthSpec


class CharTokenizer:
    def decode(self, ids):
        return "".join(chr(65 + i % 26) for i in ids)


def test_elastic_greedy_generation_equals_stock_generate(tiny_model):
    prompt = [5, 9, 13, 2]
    elastic = ElasticGPT2(tiny_model).eval()
    for w in (1.0, 0.25):
        mine = generate_ids(elastic, prompt, w, max_new_tokens=12)
        student = extract_student(tiny_model, WidthSpec(w)).eval()
        ref = student.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, 4, dtype=torch.long),
                               max_new_tokens=12, do_sample=False, pad_token_id=0)[0, 4:].tolist()
        assert mine == ref


def test_sampling_is_seeded_and_respects_context(tiny_model):
    elastic = ElasticGPT2(tiny_model).eval()
    a = generate_ids(elastic, [1, 2], 0.5, 10, temperature=1.0, seed=3)
    assert a == generate_ids(elastic, [1, 2], 0.5, 10, temperature=1.0, seed=3)
    assert len(generate_ids(elastic, [1] * 30, 1.0, 50)) == 32 - 30  # stops at n_positions


def test_diagnostics_of_a_model_against_itself(tiny_model):
    elastic = ElasticGPT2(tiny_model).eval()
    fn = lambda x: elastic(x, width=1.0).logits  # noqa: E731
    new = generate_ids(elastic, [3, 4, 5], 1.0, 6)
    d = diagnose(fn, fn, CharTokenizer(), [3, 4, 5], new, k=3)
    assert len(d.tokens) == 6 and max(d.kl) < 1e-5
    assert d.teacher_prob == d.student_prob
    assert all(row[0][1] >= row[1][1] for row in d.teacher_topk)
    greedy_top = [row[0][0] for row in d.student_topk]
    assert greedy_top == d.tokens  # greedy tokens are the student's own top-1


def test_generate_command_is_repeatable_and_checks_the_width(nested_run, capsys):
    from nml_core.cli import main
    argv = ["generate", str(nested_run), "--width", "0.25", "--prompt", "the king", "--max-new-tokens", "6",
            "--temperature", "0.8", "--seed", "3", "--device", "cpu"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first and first.startswith("the king")
    assert main(argv[:3] + ["0.01"] + argv[4:]) == 2
    assert "keeps 0 of the teacher's 8 heads" in capsys.readouterr().err

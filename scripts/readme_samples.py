"""Generation samples of a nested run for the README: the teacher and chosen widths continue the same prompts,
sampled with a fixed seed, so the table is made by the code and can be remade.

  python scripts/readme_samples.py cached_runs/shakespeare-nml [--widths 0.5,0.25] [--new 40] [--seed 0]
"""
from __future__ import annotations

import argparse

from nml_core.analysis.generate import generate_ids
from nml_core.data.batches import example_prompts
from nml_core.nesting.elastic import ElasticGPT2
from nml_core.nesting.width import parse_widths
from nml_core.store.models import load_run_model, load_teacher_of, run_tokens
from nml_core.store.runs import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--widths", default="0.5,0.25")
    ap.add_argument("--new", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.8)
    a = ap.parse_args()
    run = load_run(a.run)
    model, tokenizer = load_run_model(run, "cpu")
    students = ElasticGPT2(model, run.axes).eval()
    teacher = ElasticGPT2(load_teacher_of(run, "cpu"), run.axes).eval()
    prompts = example_prompts(run_tokens(run).val, tokenizer)
    print(f"Sampled at temperature {a.temperature}, seed {a.seed}, {a.new} new tokens "
          f"(`python scripts/readme_samples.py {a.run}`); prompts cut from the held-out plays.\n")
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        print(f"**Prompt:** `{prompt}`\n")
        print("| model | continuation |\n|---|---|")
        for name, m, w in [("teacher", teacher, 1.0)] + [(f"NML width {w:g}", students, w)
                                                         for w in parse_widths(f"1,{a.widths}")[1:]]:
            text = tokenizer.decode(generate_ids(m, ids, w, a.new, a.temperature, a.seed))
            cell = text.replace("|", "\\|").replace("\n", " ⏎ ").strip()
            print(f"| {name} | {cell} |")
        print()


if __name__ == "__main__":
    main()

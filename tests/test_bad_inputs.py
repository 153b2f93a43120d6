"""The bad-input table: every row is a CLI call a user could type wrongly. Each must end with exit code 2 and one
line on stderr (`error: ...`, naming the problem; no traceback), and write nothing anywhere in the runs or the
folders it was given. The row count is the reliability table's "inputs tried" in BENCHMARKS.md."""
import os
import shutil
from pathlib import Path

import pytest

from nml_core.cli import main


def snapshot(*roots: Path) -> dict:
    """path -> (size, mtime) of every file under the roots: what 'nothing written' is checked against."""
    out = {}
    for root in roots:
        for p in Path(root).rglob("*"):
            out[str(p)] = (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, teacher_run, nested_run):
    """Copies of a teacher run and a nested run, a user's own non-empty folder, a file, an empty dir."""
    root = tmp_path_factory.mktemp("bad-inputs")
    shutil.copytree(teacher_run, root / "teacher")
    shutil.copytree(nested_run, root / "nested")
    (root / "mine").mkdir()
    (root / "mine" / "config.json").write_text('{"model_type": "gpt2"}')  # a user's own model folder
    (root / "mine" / "notes.txt").write_text("keep me")
    (root / "file.txt").write_text("a file, not a folder")
    (root / "empty").mkdir()
    (root / "corpus").mkdir()
    (root / "corpus" / "a.txt").write_text("the king my lord good sir what shall we do now " * 200)
    return root


T, N = "{root}/teacher", "{root}/nested"
CASES = [  # (argv, words the one line must contain)
    (["train", "--teacher", T, "--out", "{root}/x", "--widths", "1,1.5"], "outside (0, 1]"),
    (["train", "--teacher", T, "--out", "{root}/x", "--widths", "1,0.25,0.5"], "not sorted"),
    (["train", "--teacher", T, "--out", "{root}/x", "--widths", "1,0.5,0.5"], "duplicate"),
    (["train", "--teacher", T, "--out", "{root}/x", "--widths", "1,0.01"], "keeps 0 of the teacher's 8 heads"),
    (["train", "--teacher", T, "--out", "{root}/x", "--widths", "0.5,0.25"], "must start with 1"),
    (["train", "--teacher", T, "--out", "{root}/x", "--widths", "1,0.3"], "not a whole number of the teacher's 8 heads"),
    (["train", "--teacher", T, "--out", "{root}/x", "--widths", "1,abc"], "not a comma-separated list"),
    (["train", "--teacher", T, "--out", "{root}/x", "--nest", "heads"], "does not give a stock GPT-2"),
    (["train", "--teacher", T, "--out", "{root}/x", "--nest", "depthwise"], "unknown nest axis"),
    (["train", "--teacher", T, "--out", "{root}/x", "--kd-source", "ta"], "--kd-source ta needs --init"),
    (["train", "--teacher", "{root}/no-such-teacher", "--out", "{root}/x"], "no such directory"),
    (["train", "--teacher", "{root}/file.txt", "--out", "{root}/x"], "is a file"),
    (["train", "--teacher", T, "--out", "{root}/file.txt"], "is a file"),
    (["train", "--teacher", T, "--out", "{root}/mine"], "non-empty folder"),
    (["train", "--teacher", T, "--out", "{root}/x", "--steps", "0"], "--steps 0 is outside [1, "),
    (["train", "--teacher", T, "--out", "{root}/x", "--alpha", "2"], "--alpha 2 is outside [0, 1]"),
    (["train", "--teacher", T, "--out", "{root}/x", "--ctx", "1000"], "exceeds the teacher's 32 positions"),
    (["train", "--teacher", T, "--out", "{root}/x", "--strategy", "greedy"], "invalid choice: 'greedy'"),
    (["train", "--teacher", T, "--out", "{root}/x", "--mixed-precision", "fp16", "--device", "cpu"],
     "no fast path on a CPU"),
    (["train", "--teacher", T, "--out", "{root}/x", "--steps", "many"], "--steps 'many' is not a whole number"),
    (["pretrain", "--data", "{root}/corpus", "--out", "{root}/x", "--n-embd", "100", "--n-head", "8"],
     "not a multiple of --n-head"),
    (["pretrain", "--out", "{root}/x"], "--data is required"),
    (["export", N, "--width", "-1", "--out", "{root}/x"], "outside (0, 1]"),
    (["export", N, "--width", "1.5", "--out", "{root}/x"], "outside (0, 1]"),
    (["export", N, "--width", "0.3", "--out", "{root}/x"], "use 0.25 (2 heads) or 0.375 (3 heads)"),
    (["export", N, "--width", "half", "--out", "{root}/x"], "is not a fraction"),
    (["export", N, "--width", "0.5", "--out", "{root}/mine"], "non-empty folder that nml did not write"),
    (["export", N, "--width", "0.5", "--out", "{root}/file.txt"], "is a file"),
    (["export", N, "--width", "0.5", "--out", "/sys/nml-export-test"], "cannot write"),
    (["export", "{root}/file.txt", "--width", "0.5", "--out", "{root}/x"], "is a file, not a run directory"),
    (["eval", "{root}/no-such-run"], "does not exist"),
    (["eval", "{root}/empty"], "holds no run"),
    (["eval", N, "--max-tokens", "lots"], "is not a whole number"),
    (["bench", N, "--threads", "two"], "is not a whole number"),
    (["bench", N, "--precision", "int4"], "invalid choice: 'int4'"),
    (["generate", N, "--width", "0.3", "--prompt", "ROMEO:"], "not a whole number"),
    (["generate", N, "--width", "1/0", "--prompt", "ROMEO:"], "is not a fraction"),
    (["baseline", T, "--kind", "naive"], "baselines belong to a nested run"),
    (["baseline", N, "--kind", "magic"], "invalid choice: 'magic'"),
    (["finetune", N, "--width", "0.5", "--task", "poetry"], "unknown task 'poetry'"),
    (["finetune", N, "--width", "0.5", "--task", "genre", "--starts", "bogus", "--ctx", "32"], "unknown starting point"),
    (["finetune", N, "--width", "0.5", "--task", "genre"], "--ctx 128 exceeds the model's 32 positions"),
    (["cache-teacher", "--teacher", T, "--out", "{root}/x", "--k", "0"], "--k 0 is outside [1, "),
    (["cache-teacher", "--teacher", T, "--out", "{root}/mine"], "non-empty folder"),
    (["train", "--teacher", T, "--out", "{root}/x", "--depths", "1,0.25"], "keeps 0 of the teacher's 2 layers"),
    (["train", "--teacher", T, "--out", "{root}/x", "--depths", "0.5"], "must start with 1"),
    (["train", "--teacher", T, "--out", "{root}/x", "--depths", "1,deep"], "not a comma-separated list"),
    (["export", N, "--width", "0.5", "--depth", "0.3", "--out", "{root}/x"], "not a whole number of the teacher's 2 layers"),
    (["export", N, "--width", "0.5", "--depth", "2", "--out", "{root}/x"], "outside (0, 1]"),
    (["generate", N, "--depth", "0", "--prompt", "ROMEO:"], "outside (0, 1]"),
    (["baseline", N, "--kind", "independent", "--width", "1", "--depth", "0.3"], "not a whole number"),
    (["eval", T, "--grid"], "the grid belongs to a nested run"),
    (["whatif", N, "--target", "nowhere"], "no quality scored yet"),
    (["whatif", T, "--target", "cpu"], "budget search reads a nested run"),
    (["whatif", N, "--target", "cpu", "--batch", "0"], "--batch 0 is outside [1, "),
    (["whatif", N, "--target", "cpu", "--workload", "train"], "invalid choice: 'train'"),
    (["list", "{root}/no-such-folder"], "is not a folder"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, words", CASES, ids=[" ".join(a[:3]) + f" #{i}" for i, (a, _) in enumerate(CASES)])
def test_a_bad_input_is_one_line_exit_2_and_writes_nothing(world, capsys, argv, words):
    before = snapshot(world)
    if argv[0] in ("train", "pretrain"):  # each row tests one bad input, not two: a required flag, the tiny context
        given = {a.split("=")[0] for a in argv}
        argv = argv + ["--steps", "1"] * ("--steps" not in given) + ["--ctx", "32"] * ("--ctx" not in given)
    with pytest.raises(SystemExit) as exited:  # argparse exits; every other error returns 2
        raise SystemExit(main([a.format(root=world) for a in argv]))
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    assert words in err[0], err[0]
    assert snapshot(world) == before, "a bad input wrote or changed something"
    assert not os.path.exists("/sys/nml-export-test")


def test_the_table_has_at_least_30_rows():
    assert len(CASES) >= 30


# The generated rows: every number every command takes (nml_core.commands), walked with values out of its range.
# Arguments the command needs besides the one under test; the bad value is refused before any of them is read.
NEEDS = {"run": N, "--teacher": T, "--data": "{root}/corpus", "--out": "{root}/x", "--prompt": "ROMEO:",
         "--kind": "naive", "--task": "genre", "--target": "cpu", "--width": "0.5", "--steps": "1"}


def generated_rows() -> list[tuple[list[str], str]]:
    from nml_core.commands import COMMANDS
    rows = []
    for command in COMMANDS.values():
        for spec in command.inputs:
            needed = [x for i in command.inputs if i.required and i.name in NEEDS and i is not spec
                      for x in ([NEEDS[i.name]] if i.name == "run" else [i.name, NEEDS[i.name]])]
            if spec.numeric:
                rows += [([command.name] + needed + [f"{spec.name}={v}"], spec.name) for v in spec.bad_values()]
    return rows


GENERATED = generated_rows()


@pytest.mark.parametrize("argv, name", GENERATED, ids=[" ".join([a[0], a[-1]]) for a, _ in GENERATED])
def test_every_number_out_of_range_is_one_line_exit_2_and_writes_nothing(world, capsys, argv, name):
    test_a_bad_input_is_one_line_exit_2_and_writes_nothing(world, capsys, argv, name)


def test_the_generated_table_walks_every_number_of_every_command():
    from nml_core.commands import COMMANDS
    numbers = {(c.name, i.name) for c in COMMANDS.values() for i in c.inputs if i.numeric}
    assert {(a[0], name) for a, name in GENERATED} == numbers and len(numbers) >= 40

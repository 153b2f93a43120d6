"""NML Explorer engine: Nested Matrix Learning on Hugging Face GPT-2.

  api.py       the Python API behind every CLI command (cli.py: `python -m nml_core` / `nml`)
  device.py    auto | cpu | cuda, device names (latency-file keys), autocast dtype, threads
  report.py    text and markdown renderings (eval / latency tables, run list, model cards)
  arch/        everything GPT-2-specific: dims, student config, slice rules, permutations, hooks, cost
  nesting/     width specs, the elastic model (views of shared weights), importance reordering
  training/    recipe (config), loop, nested KD loss, checkpoints, top-k teacher cache, estimate
  data/        tokenizer (bundled GPT-2 BPE), text sources -> token files, batches
  analysis/    evaluate, latency, device profiles + what-if, measured memory, pareto points, generation
  store/       atomic files, run dirs, model loading (hub / local / runs), export, background jobs
  app/         Streamlit glue and plotly figures for app.py and pages/ (the engine never imports it)
"""
__version__ = "0.2.0"

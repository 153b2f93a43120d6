"""NML Explorer engine: Nested Matrix Learning on Hugging Face GPT-2. Layers, bottom up (a module imports only
its own layer or lower ones; tests/test_structure.py checks it):

  0  errors.py, device.py    one-line errors; auto | cpu | cuda, device keys, threads, the precision rule
  1  store/, data/, arch/    storage (atomic files, run dirs, checkpoints, liveness, model loading, export);
                             tokenizer, token files, batches, tasks; everything GPT-2-specific
  2  nesting/                width specs, the elastic model, importance reordering
  3  training/               recipe, loop, nested KD loss, teacher cache, estimate, precision probe, fine-tuning
  4  analysis/               evaluate, latency, profiles + what-if, memory, Pareto points, generation
  5  api.py, cli.py, report.py, jobs.py   the API behind every command, renderings and cards, background jobs
  6  app/                    Streamlit glue and plotly figures for app.py and pages/ (the engine never imports it)
"""
__version__ = "0.2.0"

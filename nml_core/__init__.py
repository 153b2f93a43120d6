"""NML Explorer engine: Nested Matrix Learning on Hugging Face GPT-2. Layers, bottom up (a module imports only
its own layer or lower ones; tests/test_structure.py checks it):

  0  errors, device, inputs,   one-line errors; auto | cpu | cuda, device keys, threads, the precision rule;
     files, hub              the declaration of a user input; atomic files; what the model hub holds and reaches
  1  data/, arch/            tokenizer, token files, batches, tasks; everything GPT-2-specific
  2  store/, nesting/        run dirs, checkpoints, liveness, model loading, export; width and depth specs, the
                             elastic model, importance reordering
  3  training/               recipe, loop, nested KD loss, teacher cache, estimate, precision probe, fine-tuning
  4  analysis/               evaluate, latency, profiles + what-if, memory, Pareto points, generation
  5  api/, commands, cli,    the API (one module per job), the table of commands and its CLI, renderings and
     report, jobs, docs      cards, background jobs, the docs' rendered blocks
  6  app/                    Streamlit glue and plotly figures for app.py and pages/ (the engine never imports it)
"""
__version__ = "0.2.0"

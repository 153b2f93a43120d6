"""NML Explorer engine: Nested Matrix Learning on Hugging Face GPT-2.

Modules, one idea each: width (which prefix a student keeps), slicing (elastic forward, extraction),
importance (reordering), losses + train (the loop), data, teacher (loading), evaluate, latency,
export, runs (storage). `nml_core.commands` is the Python API behind the CLI (`python -m nml_core`).
"""
__version__ = "0.1.0"

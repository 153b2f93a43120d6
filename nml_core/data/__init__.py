"""Data: the GPT-2 tokenizer, text sources -> token files with a train/val split, and batches."""

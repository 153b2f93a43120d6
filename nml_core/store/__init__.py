"""Storage: run directories, where models come from (hub, local, runs), export of stock HF
model directories, and background training jobs."""

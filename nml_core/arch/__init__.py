"""Architecture families. `gpt2` is the one family: its module holds every GPT-2-specific rule (dims, student
config, slice rules, permutation tables, hook points, cost formula, the "is this GPT-2" check)."""

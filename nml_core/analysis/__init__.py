"""Analysis: quality (evaluate), speed (latency), device profiles (profile) and the hardware what-if built on them
(whatif), measured peak memory (memory), accuracy-vs-cost points (pareto) and generation with teacher-vs-student
diagnostics (generate)."""

"""Analysis: quality (evaluate), speed (latency), the hardware what-if (roofline), accuracy-vs-cost points
(pareto) and generation with teacher-vs-student diagnostics."""

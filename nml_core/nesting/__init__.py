"""Nesting: which prefix a student keeps (width), the elastic model that runs any width on shared weights,
and importance reordering so that every prefix starts with the units that matter most."""

"""Judges: compare responses under a constitution's principles, and the judge stage."""

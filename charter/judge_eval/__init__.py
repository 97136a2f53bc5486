"""Measuring judges against people: agreement, biases, reliability, injection, comparison tables.

Kept apart from :mod:`charter.judges`, which holds what judges and what runs the judge stage;
this package only reads judgments and human labels and reports on them.
"""

"""Critique -> revision: the supervised half of Constitutional AI, with a judge that checks it.

``stage`` writes the chains (initial response, then critique and revision rounds), ``degenerate``
drops revisions that are empty, unchanged, a restated critique or shared boilerplate, ``verify``
keeps only revisions the judge prefers to the initial response, and ``outputs`` turns the kept
chains into SFT rows and preference pairs.
"""

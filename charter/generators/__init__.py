"""Engines (model backends) and the generate stage."""

"""Prompt synthesis for teams with no prompts: draft requests from three sources, then filter.

``drafts`` holds the record a source writes; ``magpie``, ``sources`` draft; ``filters`` and
``dedup`` drop (each drop with its reason); ``diversity`` measures what is kept; ``stage`` runs
the rounds. The command that reads the config is :mod:`charter.commands.synthesize`.
"""

"""``charter audit``: principles proposed from the pairs where the judge and people disagree.

The audit judges human-labelled pairs under the constitution (one drawn principle per pair, as
``charter run`` and ``charter eval-judge`` do), splits the pairs into a held-in and a held-out
part by a seeded hash of the pair id, has the judge's own model propose principles that would
explain the human choice on the held-in disagreements, and scores each candidate by how much it
would raise agreement with people: on the held-in part to rank, on the held-out part to check.

- :mod:`charter.audit.labelled`: the labelled pairs, from a dev file or a reviewed run.
- :mod:`charter.audit.disagreements`: the split and the judge's verdict on every pair.
- :mod:`charter.audit.propose`: the proposer's prompt, parsing its text, validation, dedupe.
- :mod:`charter.audit.score`: what "adding" and "replacing" mean, gains, intervals, the pick.
- :mod:`charter.audit.proposal_file`: ``proposed.yaml`` (the user's text plus the pick) and
  its diff; the user's file is never written.
"""

"""``charter report``: one self-contained HTML page per output directory.

:func:`write_report` reads a run directory (a ``charter run``, a revise run, ``eval-judge``,
``calibrate`` or ``train`` output) and writes ``report.html`` beside its files; with
``against=OTHER`` it writes a diff page, ``report_vs_<OTHER's folder name>.html``, showing what
changed from OTHER to this run. The page needs no network and no other file.
"""

from charter.report.render import Report, build_report, report_path, write_report

__all__ = ["Report", "build_report", "report_path", "write_report"]

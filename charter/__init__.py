"""charter: turn a written constitution into preference data."""

__version__ = "0.1.0"

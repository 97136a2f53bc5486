"""The one exception type for a user's mistake.

The CLI catches :class:`InputError` and prints its message on one line, without a traceback:
bad input is the user's to fix, and a traceback would bury the file, line and field they need.
"""

from __future__ import annotations


class InputError(Exception):
    """A problem with something the user gave us (a file, a row, a config value).

    Args:
        message: what is wrong and, where it helps, how to fix it.
        file: the file the problem is in, if any.
        line: 1-based line (or row) number in that file, if known.
        field: the field, key or YAML path at fault, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
        if self.field:
            where = f"{where} [{self.field}]" if where else f"[{self.field}]"
        return f"{where}: {self.message}" if where else self.message

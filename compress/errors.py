"""The exception type that the CLI turns into a one-line message and exit code 2."""


class UsageError(ValueError):
    """Bad input from a user: unknown name, option out of range, missing data."""


def first_line(error: BaseException) -> str:
    """An exception's message in one line, for one-line errors; its type if it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

"""Errors that reach the user as one line, never as a traceback from deep inside torch."""


class EmbedlabError(Exception):
    """A problem with the user's configuration or data, stated in one line."""


class ConfigError(EmbedlabError):
    """The configuration cannot work: a bad path, a loss that does not fit the data."""


class DataError(EmbedlabError):
    """The data cannot be trained on: a missing column, an empty text, an unreadable file."""


def user_error(error: BaseException) -> EmbedlabError | None:
    """The EmbedlabError behind `error`, also when Hydra's instantiate wrapped it (once or several times)."""
    while error is not None:
        if isinstance(error, EmbedlabError):
            return error
        error = error.__cause__
    return None


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (its type's name when it has none), for a one-line report."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]

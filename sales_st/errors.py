"""The project's exceptions, by who must act: a user fixing the configuration (exit 2), a user
fixing the input data or its location (exit 1).  Anything else that escapes a job is a bug:
the job runner exits 3 with the traceback in the log."""

from __future__ import annotations


class SalesStError(Exception):
    """Base of the errors a job reports as one clear line."""


class ConfigError(SalesStError, ValueError):
    """A configuration file, override or expression is wrong; the message names the key and
    the file.  Jobs exit 2."""


class DataError(SalesStError, ValueError):
    """The input data, or an artifact built from it (features, a model), cannot be used as
    configured; the message says what was expected and what was found.  Jobs exit 1."""


class MissingInputError(DataError, FileNotFoundError):
    """An input file or table, a feature directory or a model that a job needs does not exist."""

"""The exceptions the Stratus client raises.

Every error from the cluster or the connection is a `StratusError`, with the
same message the `stratus` command line prints; the subclasses say what kind
of failure it is, and also derive from the matching built-in exception so
that code written for pandas or Dask catches them too.
"""


class StratusError(Exception):
    """A request failed (the message says what and where)."""


class ConnectionError(StratusError, OSError):  # noqa: A001 - Dask-style name
    """The cluster can not be reached, the connection broke, or no worker is
    there to do the work."""


class NotFoundError(StratusError, LookupError):
    """A persisted frame, file, object or bucket that is not there."""


class BadInputError(StratusError, ValueError):
    """The request is wrong: an unknown column, a bad expression, a name
    already taken, a destination that is refused."""


class CancelledError(StratusError):
    """The request was cancelled on the cluster before it finished."""

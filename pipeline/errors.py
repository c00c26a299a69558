class AdderError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""

    exit_code = 2

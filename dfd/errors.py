"""The exception the CLI turns into one clear line and exit status 1."""


class DfdError(Exception):
    """A failure the user can act on; its message is shown without a traceback."""

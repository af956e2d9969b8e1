"""The project's error classes. Every entry point (``common.cli``) prints an ``InputError`` (or a
subclass) as one line ``error: ...`` and exits 2; anything else is an internal error (exit 1)."""


class InputError(Exception):
    """Bad input or configuration, found before heavy work: the message is one line that names the
    problem (key, value, path) and the fix."""


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable or not in the expected format."""

"""The one exception type for bad user input: the CLI prints it as one line and exits 2."""


class UserError(Exception):
    """Bad input a user can fix (unknown optimizer, bad scale, missing file, corrupt store)."""

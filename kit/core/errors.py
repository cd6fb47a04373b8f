"""The one exception kit raises for bad input: the CLI prints its message on one line and exits 1."""


class KitError(Exception):
    """Bad input or state that the user can fix; the message names the file, row or field."""

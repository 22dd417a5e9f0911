"""Errors a user can fix. The CLI prints them as one line; the workbench shows them in the UI."""


class UserError(ValueError):
    """Bad input from the user (a missing file, an unreadable image, a label out of range...)."""

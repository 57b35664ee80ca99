"""The one exception type whose message is meant for the user."""


class StudioError(Exception):
    """A problem the user can act on; its message is one readable line.

    The CLI prints it as-is and exits non-zero; the studio shows it in the window.
    Anything else that escapes is a bug and is reported as such.
    """

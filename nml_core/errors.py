"""The one exception type users see: a single line naming the problem and the fix."""


class NMLError(Exception):
    """A problem with the user's input or environment, worded as `what is wrong; what to do`.

    The CLI prints it as one line (no traceback) and exits with status 2; the app shows it in a box.
    """

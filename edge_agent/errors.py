"""The base of every error that is the user's to fix (exit code 2): bad config, missing or
corrupt files, a bank from another model, an unknown audio device."""


class UserError(Exception):
    """A problem with the user's input; the message names it and says what to do."""

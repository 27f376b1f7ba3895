"""The one exception type users see: a clear paragraph instead of a traceback."""


class Mnist99Error(Exception):
    """A problem the user can fix; its message says what was wrong and how to fix it."""


class ConfigError(Mnist99Error):
    """A configuration value that cannot work (named key, allowed values)."""


class DataError(Mnist99Error):
    """Missing, malformed or unverifiable data (named file or folder, what to do)."""


class DivergedError(Mnist99Error):
    """The training loss stopped being a finite number (the step, the likely cause, what was kept)."""


class Interrupted(Mnist99Error):
    """A run stopped by a signal (Ctrl-C, SIGTERM): what was kept, how to go on. `trained` is False
    when it stopped before its first training step, with nothing worth keeping."""

    def __init__(self, message: str, signum: int, trained: bool = True):
        super().__init__(message)
        self.signum = signum
        self.trained = trained

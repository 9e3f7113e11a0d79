"""User-facing errors: the CLI prints them as one line and exits with status 2."""


class ScorelabError(Exception):
    """A problem with the user's input, files or configuration, explained in words."""


class DataError(ScorelabError):
    """Data that cannot be used: unknown name, wrong shape, non-finite or empty."""


class CheckpointError(ScorelabError):
    """A run directory or checkpoint that is missing, incomplete, corrupt or mismatched."""

"""Kiln's exception type: every error Kiln raises itself says what is wrong and where."""


class KilnError(Exception):
    """A user-facing error (bad input, unsupported construct, failed compilation stage)."""

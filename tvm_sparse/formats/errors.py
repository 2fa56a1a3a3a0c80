"""Errors raised while building sparse containers."""

from ..errors import TVMSparseError


class FormatError(TVMSparseError, ValueError):
    """A matrix or parameter cannot be represented in the requested format."""

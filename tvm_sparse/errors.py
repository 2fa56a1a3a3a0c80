"""The project's error hierarchy: every user-facing failure is a TVMSparseError."""


class TVMSparseError(Exception):
    """Base class of errors that tvm-sparse reports to users as one clear message."""


class ModelError(TVMSparseError, ValueError):
    """The model cannot be read or compiled (malformed file, unsupported op, bad shapes)."""

"""The project's error hierarchy: every user-facing failure is a TVMSparseError."""


class TVMSparseError(Exception):
    """Base class of errors that tvm-sparse reports to users as one clear message."""


class ModelError(TVMSparseError, ValueError):
    """The model cannot be read or compiled (malformed file, unsupported op, bad shapes)."""


def tvm_rejection(err: Exception, doing: str) -> ModelError:
    """The ModelError for TVM failing to ``doing`` a model its importer let through: the exception type and
    the line of its message that gives the reason (TVM puts it last, before any IR it dumps)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
    # An error that dumps IR ends with TVMScript's "# Metadata omitted ..." note: its reason is the first line.
    reason = lines[0] if lines[-1].startswith("#") else lines[-1]
    return ModelError(f"TVM could not {doing} the model ({type(err).__name__}: {reason})")

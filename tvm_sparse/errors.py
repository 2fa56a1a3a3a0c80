"""The project's error hierarchy: every user-facing failure is a TVMSparseError."""


class TVMSparseError(Exception):
    """Base class of errors that tvm-sparse reports to users as one clear message."""


class ModelError(TVMSparseError, ValueError):
    """The model cannot be read or compiled (malformed file, unsupported op, bad shapes)."""


def tvm_rejection(err: Exception, doing: str) -> ModelError:
    """The ModelError for TVM failing to ``doing`` a model its importer let through: the exception type and
    the last line of its message (TVM puts the reason last)."""
    text = str(err).strip()
    return ModelError(f"TVM could not {doing} the model ({type(err).__name__}: {text.splitlines()[-1] if text else ''})")

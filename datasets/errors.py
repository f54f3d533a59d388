"""The one error the readers raise for data that is missing or malformed.

``runner`` catches it by name (it imports nothing of ``runner`` here, to keep the
dependency one way) and shows its message as the run's one-line reason."""


class DataError(Exception):
    """Data not where the study says, or not in the format its source reads."""

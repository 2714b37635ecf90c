"""finml: hybrid GPU ML platform infrastructure with data residency as code."""

__version__ = "0.1.0"

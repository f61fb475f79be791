"""arrs-validate: batch validation of ARRS claims against the scheme's rules."""

__version__ = "0.1.0"

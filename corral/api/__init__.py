"""Wire types of the HTTP API and the option table shared by server and runner."""

from corral.api.options import OPTION_KINDS, RUNNER_OPTIONS, Options, validate_options

__all__ = ["OPTION_KINDS", "RUNNER_OPTIONS", "Options", "validate_options"]

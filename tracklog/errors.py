"""Errors and exit codes: every failure tracklog reports to a user is a TracklogError.

The command-line layer turns one into a one-line message on stderr and its exit code;
nothing below cli.py calls sys.exit.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    DATA_ERROR = 1  # some input could not be used (missing file, corrupt gzip, bad manifest, ...)
    USAGE_ERROR = 2  # bad option or argument (click uses 2 as well)
    LOCK_BUSY = 3  # another tracklog process holds the database's writer lock
    NOT_FOUND = 4  # the asked-for delivery or recipient is not in the database
    CONFIG_ERROR = 5  # the config file or environment is invalid (bad TOML, missing secret)
    LATE_LOGS = 6  # `check --max-lag`: a tracking server's logs stopped arriving
    INTERNAL_ERROR = 70  # a bug: please report it (traceback with --debug)


class TracklogError(Exception):
    """An error with a message meant for a person and an exit code meant for cron."""

    exit_code: ExitCode = ExitCode.DATA_ERROR


class DataError(TracklogError):
    exit_code = ExitCode.DATA_ERROR


class UsageError(TracklogError):
    exit_code = ExitCode.USAGE_ERROR


class LockBusyError(TracklogError):
    exit_code = ExitCode.LOCK_BUSY


class NotFoundError(TracklogError):
    exit_code = ExitCode.NOT_FOUND


class ConfigError(TracklogError):
    exit_code = ExitCode.CONFIG_ERROR


class LateLogsError(TracklogError):
    exit_code = ExitCode.LATE_LOGS

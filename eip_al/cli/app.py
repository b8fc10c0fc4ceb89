"""The `eip-al` typer application and the error handling shared by all commands."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from eip_al.config import ConfigError
from eip_al.io import FrameError
from eip_al.model.errors import CheckpointError, ElementError
from eip_al.rundir import RunDirError

app = typer.Typer(
    name="eip-al",
    help="Active learning for interatomic potentials with single-model evidential uncertainty.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    FrameError,
    RunDirError,
    FileNotFoundError,
    CheckpointError,
    ElementError,
)


def print_error(message: str) -> None:
    """One red `error:` line on stderr, the message printed verbatim (no rich markup)."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def user_errors(fn: F) -> F:
    """Turn a user mistake into one clear red line and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]

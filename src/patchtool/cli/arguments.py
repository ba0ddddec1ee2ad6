"""The command line as click reads it, adjusted before a run: global options
given after the command moved before it, and no empty defaults in --help."""

from __future__ import annotations

import click


def hide_empty_defaults(command: click.Command) -> None:
    """No `[default: None]` or `[default: no-force]` in --help: an option's help
    text says what its absence means."""
    params = list(command.params)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            hide_empty_defaults(sub)
    for param in params:
        if param.default in (None, False, (), []) and hasattr(param, "show_default"):
            param.show_default = False


def note_global_options(command: click.Command) -> None:
    """Each command's --help ends by naming the global options, which work after the
    command too (globals_first), and where they are described."""
    if not isinstance(command, click.Group):
        return
    names = [
        "/".join(param.opts)
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and param.name != "version"
    ]
    for sub in command.commands.values():
        sub.epilog = (
            f"Global options, before or after the command: {', '.join(names)} "
            "(see `patchtool --help`)."
        )


def globals_first(command: click.Command, args: list[str]) -> list[str]:
    """Move the global options (--store, --cache-dir, --debug, -q) found after the
    command name to before it, reading the command's own options so that an
    option's value (`-m -q`) is never taken for a global option."""
    if not isinstance(command, click.Group):
        return args
    global_options = _option_arity(command.params)
    index = 0
    while index < len(args) and args[index].startswith("-") and args[index] != "--":
        name = args[index].split("=", 1)[0]
        index += 1 + (global_options.get(name, 0) if "=" not in args[index] else 0)
    if index >= len(args) or args[index] not in command.commands:
        return args
    sub_options = _option_arity(command.commands[args[index]].params)
    moved: list[str] = []
    rest: list[str] = []
    position = index + 1
    while position < len(args):
        item = args[position]
        if item == "--":
            rest.extend(args[position:])
            break
        name = item.split("=", 1)[0]
        is_global = name in global_options and name not in sub_options
        arity = global_options if is_global else sub_options
        width = 0 if "=" in item else arity.get(name, 0)
        (moved if is_global else rest).extend(args[position : position + 1 + width])
        position += 1 + width
    return args[:index] + moved + args[index : index + 1] + rest


def unknown_command(command: click.Command, args: list[str]) -> str | None:
    """The command name given that is no command of `command` (after its global
    options), or None: such a name gets the closest command, named in the one
    wording of a close name (core/values.py) instead of click's own."""
    if not isinstance(command, click.Group):
        return None
    global_options = _option_arity(command.params)
    index = 0
    while index < len(args) and args[index].startswith("-") and args[index] != "--":
        name = args[index].split("=", 1)[0]
        index += 1 + (global_options.get(name, 0) if "=" not in args[index] else 0)
    if index >= len(args) or args[index] == "--" or args[index] in command.commands:
        return None
    return args[index]


def _option_arity(params: list[click.Parameter]) -> dict[str, int]:
    """Each option name and how many values follow it (0 for flags)."""
    arity: dict[str, int] = {}
    for param in params:
        if isinstance(param, click.Option):
            width = 0 if param.is_flag or param.count else param.nargs
            for name in (*param.opts, *param.secondary_opts):
                arity[name] = width
    return arity

"""Layer 7, the command line: the typer app and the one error boundary (`app`),
where a command runs (`whereabouts`), what `list` and `status` show
(`overview`).

The only layer that prints or exits; nothing imports it.
"""

"""Layer 5, what building a wheel needs below the command: the build interpreter
and its requirements, sourcing env.sh, the wheel's provenance record.

Imports layers 1 to 4 only; the steps of `build-wheel` are
`patchtool.commands.build_wheel`'s.
"""

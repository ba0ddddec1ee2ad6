"""`import`: changes from mail, plain diffs and quilt (`changes`, `inputs`), and
`import --flagscale` (`flagscale`), which imports each device and backend of a
FlagScale tree through the same `changes.import_changes`.

One command: its modules import each other and the layers below, never
another command.
"""

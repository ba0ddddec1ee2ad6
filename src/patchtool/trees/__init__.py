"""Layer 4, build trees: a tree's record and location, the work it holds that the
store does not, staging and backups, applying a series, building a tree aside
and swapping it in.

Imports layers 1 to 3 only; knows no command's options, prints nothing.
"""

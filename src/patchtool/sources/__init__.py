"""Layer 3, where upstream bases come from: the package index client, the base
cache and its integrity, released sdists, git bases.

Imports `patchtool.core` and `patchtool.store` only; never `patchtool.series`
(the same layer) and never reads a patch.
"""

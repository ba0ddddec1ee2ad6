"""Layer 3, what a series is and may do: git's reading of a patch and its limits
(safety), private patches (privacy), a tree's commits as patch files
(rendering), the message and whitespace rules (lint).

Imports `patchtool.core` and `patchtool.store` only; never `patchtool.sources`
(the same layer) and never makes or finds a build tree.
"""

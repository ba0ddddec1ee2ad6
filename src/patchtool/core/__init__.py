"""Layer 1, the foundation: errors and their exit codes, the reporter, git and
child processes, the file system, locks, fault points, scratch folders, typed
readers of configuration values.

Imports nothing of patchtool's but `patchtool.core` itself; knows nothing of the
store's format, of patches, of trees or of commands.
"""

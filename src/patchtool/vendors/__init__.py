"""Layer 2, readers of other tools' on-disk layouts (FlagScale's `hardware/` tree).

They turn another tool's files into plain values; they import only
`patchtool.core`, never the store or anything above it, and never write.
"""

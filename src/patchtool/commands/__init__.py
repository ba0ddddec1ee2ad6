"""Layer 6, one module (or package) per command, thin over the layers below;
`jobs` holds the options every command shares.

A command imports the layers below and `jobs`, never another command; it
raises and reports, never prints or exits (that is `patchtool.cli`'s).
"""

"""Reading FlagScale's `hardware/` folder: every device and backend's patches,
in every layout FlagScale has used, into plain values (`model.BackendSet`).

`reading.read_flagscale` is the entry point. The tree is untrusted input:
folders are opened without following links (`folders`), YAML is read through
PyYAML's safe loader without anchors or aliases (`yamlvalues`, `metadata`),
encrypted patches are decrypted in memory (`decryption`), and what each patch
touches is git's reading of it (`sections`, over core.gitpatch), never a
parser of this package's. Nothing here writes a file, prints, or imports the
store; a set that cannot be read is a value with its reason, not the end of
the run.
"""

"""`rebase`: carry a device's series onto another upstream base.

    state     the state file beside the tree and the tree's mark (persistence only)
    run       the resumable state machine: start, pick, --continue, --skip, --abort
    finish    the new or updated base folder written into the store, kill-safe
    report    rebase-report.md: generated parts, hand-written parts kept
    carry     `--onto` an existing base: pairing with the target's series, the plan
    forecast  `--dry-run`: the forecast's options over trees/forecast.py

Nothing here prints; every module raises `PatchtoolError`s.
"""

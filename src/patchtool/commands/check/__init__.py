"""`check`: CI checks and lint over the store; changes nothing.

For every device (or the one asked for) and every base (or the one asked for)
it records one `CheckRecord` per check:

    config   device.toml and base.toml parse and are valid
    source   the base's source yields the recorded commit (and sdist sha256)
    series   `series` lists exactly the *.patch and *.patch.age files of the
             base folder, and every patch can be read (a private one
             decrypted: without a key that opens it, exit 3; one that was
             changed or cut short, exit 6)
    safety   no patch exceeds the device's limits, is damaged, or (as git
             applies it) reaches outside the tree, into .git or through a
             symlink; the base tree is judged the same way (safety.py)
    apply    the series applies with `git am`, no fuzz, no 3-way help
    export   a fresh export of that tree (series/pipeline.py, as `patch`
             exports) writes the store byte for byte
    lint     subject, a body that says why, a valid Upstream-Status trailer,
             no added trailing whitespace or conflict markers; a private
             patch must be encrypted to exactly the recipients device.toml
             names (the rule set is lint.series_findings, which `patch` and
             `import` run on what they write)

The tree for `safety`, `apply` and `export` is built with applying.py's pieces
in a scratch folder under the cache (scratch.py: `<cache>/scratch/check-*`,
locked while it is used, removed when the check ends, and by the next run when
a kill stopped this one), never in the shared temporary folder: a private
patch's plaintext is in that tree while it is checked. The user's build folder
is never read or written. The
base cache may be filled (a cold cache fetches, as `unpatch` would), and the
cached base is always verified object by object. When the series does not
apply, `safety` judges the paths git reads from every patch instead.

Private patches (privacy.py) are decrypted in memory with `CheckOptions.keyring`
and given to git on standard input; their lines never appear in a report
(a failing hunk is named by file and position only). With `public_only` they
are left out (named in the `series` record) and `export` is not run.

Offline (`CheckOptions.offline`), a base is checked against its source only
when that source is local: the cache proves it by itself (an sdist base's
import key, a git base's commit in its source's repository), or its sdist is
in the cache or given locally (--sdist, PATCHTOOL_SDIST_PATH; not
pip's find-links, which only the index client reads). Otherwise its `source`,
`safety`, `apply` and `export` records are *skipped* (a reason, no failure),
while `config`, `series` and `lint` run as always. That decision is made here,
before `ensure_base` is called, and `ensure_base` is then handed exactly one
existing local file, so its lookup ends there (a missing or mismatching file
raises, it never goes on to the index client); as a second wall, any socket
connect or name lookup in the process while an offline check runs raises
`OfflineViolationError` (exit 1: a bug in patchtool, not a network failure).

`check --forecast VERSION` (`run_forecasts`) runs none of these: it forecasts
the rebase of every device's newest base onto VERSION (trees/forecast.py, what
`rebase --dry-run` runs), side by side like the checks, in scratch
repositories under the cache.

Exit codes: every failed check carries the code of its kind of problem
(config and source: 6 or the fetch error's own code; safety: 10, or 6 for a
corrupt patch; apply: 4; series, export and lint: 7, "the store needs work").
The run exits with the most serious code present, in the order
1 > 10 > 6 > 3 > 11 > 4 > 7 (1: a bug in patchtool, such as an offline check
that reached for the network), raising the error class of that code
(errors.error_class). Skipped records carry no code: an offline run whose
every check that ran passed exits 0.
"""

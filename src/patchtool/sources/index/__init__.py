"""The package index: pip's settings, and the one client that talks to an index.

unpatch, check, rebase and import reach a package index through this package and
nothing else (`client.IndexClient`). It reads the settings the user's pip reads
(`settings`), finds a file by name in find-links folders and pages and on PEP 691
(JSON) and PEP 503 (HTML) simple indexes (`pages`), and downloads it atomically
with its sha256 checked (`client`), over one HTTP(S) transport (`transport`) that
sends each origin only its own credentials (`credentials`).

No message built here holds a password: every URL and every exception text goes
through `credentials.redact` (and the known secrets are masked) before it reaches
an error. Nothing here prints; it raises `PatchtoolError`s and warns through a
`Reporter`.
"""

"""Layer 2, the patch store: `patches/<device>/device.toml` and one folder per upstream base.

    patches/<device>/device.toml          the device's settings
    patches/<device>/<base-id>/base.toml  the upstream the series applies to
    patches/<device>/<base-id>/series     patch order, one file name a line
    patches/<device>/<base-id>/*.patch    git format-patch mbox files
    patches/<device>/<base-id>/*.patch.age  private patches: a clear header
                                          (subject, files, recipients) and
                                          the patch, encrypted with age

The store's format is read and written here and nowhere else. Imports only
`patchtool.core`; never runs git, never imports `patchtool.vendors`.
"""

"""`rebase --dry-run`: the forecast of one base's series onto a new base, over
trees/forecast.py (which `check --forecast` shares). Nothing is written into
the store or the build folder; the scratch repository lives under the cache
(core/scratch) and goes when the forecast ends, or with the next run when a
kill stopped this one. The device's build folder lock is not needed; the
store's is taken shared, as `check` takes it."""

from __future__ import annotations

from patchtool.commands.rebase.state import RebaseOptions
from patchtool.core.errors import UsageError
from patchtool.core.locks import store_lock
from patchtool.core.report import Reporter
from patchtool.trees.forecast import Forecast, ForecastJob, forecast_onto


def forecast(options: RebaseOptions, reporter: Reporter) -> Forecast:
    if options.onto is None or "," in options.onto or options.carried:
        raise UsageError(
            "--dry-run forecasts onto one new base: give --onto VERSION (or git+URL@COMMIT)"
        )
    device = options.store.device(options.device)
    old = options.store.resolve_base(device.name, options.base)
    job = ForecastJob(
        store=options.store,
        cache=options.cache,
        archive_paths=options.archive_paths,
        keyring=options.keyring,
        version_label=options.version_label,
    )
    # Shared: other readers go on, an export of this device waits.
    with store_lock(options.store.root, device.name, False, reporter):
        return forecast_onto(job, old, device, options.onto, reporter)

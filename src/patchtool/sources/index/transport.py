"""How the index client reaches the network: one urllib opener with pip's proxy,
TLS (pip's `cert` and `client-cert`; no verification for a trusted host), plain
http only to trusted hosts and this machine, each origin's own credentials (never
across a redirect to another host), redirects to http and https only; every fetch
watched (`Watch`: its deadline, its low-speed floor, the run's cancellation); and
every failure as a NetworkError whose text holds no secret.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from patchtool import __version__
from patchtool.core.errors import NetworkError
from patchtool.sources.index.credentials import (
    Credentials,
    mask_secrets,
    origin,
    redact,
    split_credentials,
)
from patchtool.sources.index.settings import IndexSettings, load_settings
from patchtool.sources.index.watch import HTTPConnection, HTTPSConnection, Watch, opening

# What a page or a redirect from an index on the network may lead to: a file:
# link there would make the run use a local file the index chose (issue 19).
# Only what the user configured (find-links folders and files, --sdist,
# PATCHTOOL_SDIST_PATH, a file:// index URL) is ever read locally.
REMOTE_SCHEMES = ("http", "https")
_USER_AGENT = f"patchtool/{__version__}"

GENERAL_HINT = (
    "Check the settings `pip config list` shows (index-url, extra-index-url, proxy, cert, "
    "client-cert, trusted-host) and the network; on an air-gapped site pass the sdist "
    "with --sdist PATH."
)
CREDENTIALS_HINT = (
    "Fix the user and password (or token) in the index URL of pip's settings (`pip config "
    "list` shows where it is set) or in ~/.netrc; on an air-gapped site pass the sdist "
    "with --sdist PATH."
)
TLS_HINT = (
    "For an index with a private certificate authority, point pip's `cert` setting at its "
    "CA bundle (`pip config set global.cert /path/to/ca.pem`); a host you trust without "
    "verification goes in `trusted-host`. On an air-gapped site pass the sdist with "
    "--sdist PATH."
)
PROXY_HINT = (
    "Check pip's `proxy` setting and the http_proxy, https_proxy and no_proxy environment; "
    "on an air-gapped site pass the sdist with --sdist PATH."
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _RequestGuard(urllib.request.BaseHandler):
    """Runs before every request, redirected ones included."""

    def __init__(self, prepare: Callable[[urllib.request.Request], urllib.request.Request]):
        self._prepare = prepare

    def http_request(self, request: urllib.request.Request) -> urllib.request.Request:
        return self._prepare(request)

    https_request = http_request


class _RedirectGuard(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to http or https. urllib's own handler would follow
    one to ftp:// too (through a proxy from ftp_proxy) and answers one to file:
    with a bare HTTP error; this says what happened."""

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
    ) -> Any:
        location = headers.get("location") or headers.get("uri")
        if location:
            target = urllib.parse.urljoin(req.full_url, location)
            scheme = urllib.parse.urlsplit(target).scheme
            if scheme not in REMOTE_SCHEMES:
                fp.close()
                raise NetworkError(
                    f"{redact(req.full_url)}: redirects to a {shown_scheme(scheme)} URL; "
                    "patchtool follows redirects to http and https only",
                    hint=GENERAL_HINT,
                )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def shown_scheme(scheme: str) -> str:
    """A URL scheme from the network, as a message shows it (bounded)."""
    return f"{scheme[:20]}:" if scheme else "scheme-less"


class _TlsHandler(urllib.request.HTTPSHandler):
    """HTTPS with a TLS context chosen per request: verified, or not for a trusted host.
    The target is read from the full URL, which is the index's even through a proxy."""

    def __init__(self, context_for: Callable[[str], ssl.SSLContext]) -> None:
        super().__init__()
        self._context_for = context_for

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        context = self._context_for(req.full_url)
        return self.do_open(HTTPSConnection, req, context=context)


class _HttpHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(HTTPConnection, req)


class Transport:
    """Opens index URLs with pip's settings; knows the credentials seen so far."""

    def __init__(self, settings: IndexSettings | None = None) -> None:
        self._given = settings
        self._director: urllib.request.OpenerDirector | None = None
        self._contexts: dict[bool, ssl.SSLContext] = {}
        self.credentials = Credentials()

    @functools.cached_property
    def settings(self) -> IndexSettings:
        return self._given if self._given is not None else load_settings()

    def watch(self, what: str, total: float | None) -> Watch:
        """The watch of one fetch (`what`, redacted, names it in messages), with
        the deadlines of these settings; `total`: seconds it may take, if bounded."""
        return Watch(what, self.settings.deadlines, total)

    def open(self, url: str, accept: str, missing_ok: bool, watch: Watch) -> Any:
        """The response for `url`; None for a missing page (HTTP 404 or 410) if
        `missing_ok`. Every other failure is a NetworkError. `watch` (entered)
        watches the request and the body's reading, which calls its `check` after
        every read."""
        clean, _ = split_credentials(url)
        parts = urllib.parse.urlsplit(clean)
        if parts.scheme not in ("http", "https"):
            raise NetworkError(
                f"{redact(url)}: patchtool fetches only http, https and file URLs",
                hint=GENERAL_HINT,
            )
        self.credentials.remember(url)
        request = urllib.request.Request(
            clean, headers={"Accept": accept, "User-Agent": _USER_AGENT}
        )
        opening.watch = watch
        try:
            response = self._opener().open(request, timeout=self.settings.timeout)
        except urllib.error.HTTPError as error:
            error.close()
            watch.check()
            if missing_ok and error.code in (404, 410):
                return None
            raise self._http_failure(error.geturl() or clean, error) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
            watch.check()
            raise self._connection_failure(clean, error) from None
        finally:
            opening.watch = None
        watch.check()
        return response

    def _opener(self) -> urllib.request.OpenerDirector:
        if self._director is None:
            proxy = self._pip_proxy()
            director = urllib.request.OpenerDirector()
            for handler in (
                # pip's proxy for both schemes; else http_proxy, https_proxy, no_proxy.
                urllib.request.ProxyHandler({"http": proxy, "https": proxy})
                if proxy
                else urllib.request.ProxyHandler(),
                urllib.request.UnknownHandler(),
                _HttpHandler(),
                _TlsHandler(self._context_for),
                urllib.request.HTTPDefaultErrorHandler(),
                _RedirectGuard(),
                urllib.request.HTTPErrorProcessor(),
                _RequestGuard(self._prepare),
            ):
                director.add_handler(handler)
            for configured in (
                self.settings.index_url,
                *self.settings.extra_index_urls,
                *self.settings.find_links,
            ):
                self.credentials.remember(configured or "")
            self._director = director
        return self._director

    def _prepare(self, request: urllib.request.Request) -> urllib.request.Request:
        """Refuse plain http to a host that is neither trusted nor this machine; add the
        credentials of the request's own scheme, host and port. They go in as an
        unredirected header, which urllib never copies onto a redirect, so a redirect
        to another host gets that host's credentials or none."""
        parts = urllib.parse.urlsplit(request.full_url)
        host = parts.hostname or ""
        if parts.scheme == "http" and not (_is_loopback(host) or self._trusted(parts)):
            raise NetworkError(
                f"{redact(request.full_url)}: plain http to {host}, which is not a trusted "
                "host; patchtool does not fetch over it",
                hint=f"Use the index's https address, or, if you trust the network to {host}, "
                f"add it to pip's trusted-host (`pip config set global.trusted-host {host}`).",
            )
        credential = self.credentials.for_url(parts)
        if credential is not None and not request.has_header("Authorization"):
            request.add_unredirected_header("Authorization", credential.header())
        return request

    def _trusted(self, parts: urllib.parse.SplitResult) -> bool:
        _, host, port = origin(parts)
        for entry in self.settings.trusted_hosts:
            trusted = urllib.parse.urlsplit("//" + entry)
            try:
                trusted_port = trusted.port
            except ValueError:
                continue
            if (trusted.hostname or "").lower() == host and trusted_port in (None, port):
                return True
        return False

    def _context_for(self, url: str) -> ssl.SSLContext:
        verify = not self._trusted(urllib.parse.urlsplit(url))
        if verify not in self._contexts:
            self._contexts[verify] = self._tls_context(verify)
        return self._contexts[verify]

    def _tls_context(self, verify: bool) -> ssl.SSLContext:
        if verify:
            bundle, named_by = self.settings.cert, "pip's cert setting"
            for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # as pip's requests
                if bundle is None and os.environ.get(variable):
                    bundle, named_by = Path(os.environ[variable]), variable
            try:
                if bundle is None:
                    context = ssl.create_default_context()
                elif bundle.is_dir():
                    context = ssl.create_default_context(capath=str(bundle))
                else:
                    context = ssl.create_default_context(cafile=str(bundle))
            except (OSError, ssl.SSLError) as error:
                raise NetworkError(
                    f"the CA bundle {bundle} ({named_by}) cannot be used: {_describe(error)}",
                    hint=TLS_HINT,
                ) from None
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.settings.client_cert is not None:
            try:
                context.load_cert_chain(str(self.settings.client_cert))
            except (OSError, ssl.SSLError) as error:
                raise NetworkError(
                    f"the client certificate {self.settings.client_cert} (pip's client-cert "
                    f"setting) cannot be used: {_describe(error)}",
                    hint="client-cert names one PEM file holding the private key and the "
                    "certificate.",
                ) from None
        return context

    def _pip_proxy(self) -> str | None:
        proxy = self.settings.proxy
        if proxy and "://" not in proxy:
            proxy = "http://" + proxy
        return proxy

    def _proxy_for(self, url: str) -> str | None:
        parts = urllib.parse.urlsplit(url)
        if urllib.request.proxy_bypass(parts.netloc):
            return None
        return self._pip_proxy() or urllib.request.getproxies().get(parts.scheme)

    # ----------------------------------------------------------------- failures

    def scrub(self, text: str) -> str:
        """`text` with URL passwords and every known secret masked."""
        secrets = self.credentials.secrets()
        for url in (self.settings.proxy or "", *self._configured_urls()):
            _, credential = split_credentials(url if "://" in url else "http://" + url)
            if credential is not None:
                secrets.update(credential.secrets())
        return mask_secrets(text, secrets)

    def _configured_urls(self) -> tuple[str, ...]:
        settings = self.settings
        return (settings.index_url or "", *settings.extra_index_urls, *settings.find_links)

    def _http_failure(self, url: str, error: urllib.error.HTTPError) -> NetworkError:
        status = f"HTTP {error.code} {error.reason}".strip()
        parts = urllib.parse.urlsplit(url)
        if error.code == 407:
            proxy = self._proxy_for(url)
            text = f"{redact(url)}: the proxy {redact(proxy or '?')} refused the request ({status})"
            hint = PROXY_HINT
        elif error.code in (401, 403):
            credential = self.credentials.for_url(parts)
            if credential is not None:
                text = f"{redact(url)}: the index refused {credential.describe()} ({status})"
            else:
                text = (
                    f"{redact(url)}: the index asks for credentials and none are configured "
                    f"for {parts.hostname} ({status})"
                )
            hint = CREDENTIALS_HINT
        else:
            text, hint = f"{redact(url)}: the index answered {status}", GENERAL_HINT
        return NetworkError(self.scrub(text), hint=hint)

    def _connection_failure(self, url: str, error: BaseException) -> NetworkError:
        reason: object = error.reason if isinstance(error, urllib.error.URLError) else error
        proxy = self._proxy_for(url)
        where = f"cannot reach {redact(url)}"
        if proxy:
            where += f" through the proxy {redact(proxy)}"
        hint = PROXY_HINT if proxy else GENERAL_HINT
        if isinstance(reason, ssl.SSLCertVerificationError):
            text = f"{where}: TLS certificate verification failed ({reason.verify_message})"
            hint = TLS_HINT
        elif isinstance(reason, ssl.SSLError):
            text, hint = f"{where}: TLS failure ({reason.reason or reason})", TLS_HINT
        elif isinstance(reason, TimeoutError):
            text = f"{where}: no answer within {self.settings.timeout:g} s"
        else:
            text = f"{where}: {_describe(reason)}"
        return NetworkError(self.scrub(text), hint=hint)

    def broken_off(self, url: str, error: object) -> NetworkError:
        """A body that stopped coming, as a NetworkError."""
        return NetworkError(
            self.scrub(f"the download of {redact(url)} broke off: {_describe(error)}"),
            hint=GENERAL_HINT,
        )


def content_length(response: Any) -> int | None:
    """The Content-Length a response announces, if it announces one."""
    value = (response.headers.get("Content-Length") or "").strip()
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value) if len(value) <= 20 else 1 << 64


def _describe(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


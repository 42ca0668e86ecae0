"""Keeping downloads away from the inside of our network (SSRF): only http and https, and only
hosts whose every address is public. The check runs on the link a member sent and again on
every connection yt-dlp opens, so a redirect, or a name that resolves differently the second
time, cannot reach an internal address either.

Every protocol is closed, not only HTTP's first hop:
- The opener speaks HTTP(S) and nothing else: no FTP, file or data handler, and a redirect to
  any other scheme is refused (`Refused`, which the download job reports as permanent).
- yt-dlp's external downloaders (ffmpeg, rtmpdump, aria2c, curl, wget…) are off, and so are
  protocols other than HTTP(S), HLS and DASH (bots.downloads.ytdlp.ydl_options and
  ProjectYoutubeDL.dl). We turn them off rather than pass their connections through this check
  because an external program opens its own sockets: the address check lives in this
  process's connect and cannot follow it there (a proxy could for HTTP, not for RTMP, RTSP or
  FTP). yt-dlp's native HLS and DASH downloaders fetch playlists, keys and segments through
  the same request handler as everything else, so they stay on, guarded.

URL_SAFETY_TREAT_AS_PUBLIC is for tests only: it lets one loopback address stand for a public
server so that the first hop of an attack can be played on one machine.
"""

import functools
import http.client
import ipaddress
import socket
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings
from yt_dlp.networking._helper import _socket_connect, create_connection
from yt_dlp.networking._urllib import (
    HTTPDefaultErrorHandler,
    HTTPErrorProcessor,
    HTTPHandler,
    ProxyHandler,
    RedirectHandler,
    UnknownHandler,
    UrllibRH,
)

ALLOWED_SCHEMES = ("http", "https")


class UnsafeURL(Exception):
    """The link is not http(s) or leads to an address we must not connect to."""


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if str(ip) in settings.URL_SAFETY_TREAT_AS_PUBLIC:
        return True
    return ip.is_global and not ip.is_multicast


class Refused(UnsafeURL, OSError):
    """Raised while a request is under way (a connection to an internal address, a redirect to
    another scheme): an OSError, so yt-dlp reports it as a transport error that carries it,
    rather than as a bug in its request handler."""


def check_address(address: str) -> None:
    if not is_public_address(address):
        raise Refused(f"{address} is not a public address")


def check_url(url: str) -> None:
    """Raise UnsafeURL unless the scheme is http(s) and every address of the host is public."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise UnsafeURL(f"Only http and https links are allowed, not {parts.scheme or 'no scheme'}")
    if not parts.hostname:
        raise UnsafeURL("The link has no host")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port, 0, socket.SOCK_STREAM)}
    except (socket.gaierror, ValueError) as exc:
        raise UnsafeURL(f"Cannot resolve {parts.hostname}: {exc}") from exc
    for address in addresses:
        if not is_public_address(address):
            raise UnsafeURL(f"{parts.hostname} resolves to {address}, which is not a public address")


def _guarded_socket_connect(ip_addr, timeout, source_address):
    check_address(ip_addr[4][0])
    return _socket_connect(ip_addr, timeout, source_address)


def _guarded_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
    return create_connection(address, timeout, source_address, _create_socket_func=_guarded_socket_connect)


def _guarded_http_connection(http_class: type, source_address, *args, **kwargs) -> http.client.HTTPConnection:
    connection = http_class(*args, **kwargs)
    connection._create_connection = _guarded_connection
    if source_address is not None:
        connection.source_address = (source_address, 0)
    return connection


class _GuardedHTTPHandler(HTTPHandler):
    def http_open(self, req):
        conn_class = self._make_conn_class(http.client.HTTPConnection, req)
        return self.do_open(functools.partial(_guarded_http_connection, conn_class, self._source_address), req)

    def https_open(self, req):
        conn_class = self._make_conn_class(http.client.HTTPSConnection, req)
        return self.do_open(
            functools.partial(_guarded_http_connection, conn_class, self._source_address), req, context=self._context
        )


class _HTTPOnlyRedirectHandler(RedirectHandler):
    """urllib follows a redirect to ftp:// too (and hands it to whatever handler takes it)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise Refused(f"A redirect to {scheme or 'no scheme'} ({newurl[:200]}) is not followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class HTTPOnlyRH(UrllibRH):
    """yt-dlp's urllib request handler, speaking http(s) and nothing else. yt-dlp builds its
    opener in `_create_instance`; this is that opener without the file, data and FTP handlers,
    and with redirects to other schemes refused."""

    _SUPPORTED_URL_SCHEMES = ALLOWED_SCHEMES
    RH_NAME = "urllib-http-only"
    http_handler_class: type[HTTPHandler] = HTTPHandler

    def _create_instance(self, proxies, cookiejar, legacy_ssl_support=None):
        opener = urllib.request.OpenerDirector()
        handlers = [
            ProxyHandler(proxies),
            self.http_handler_class(
                debuglevel=int(bool(self.verbose)),
                context=self._make_sslcontext(legacy_ssl_support=legacy_ssl_support),
                source_address=self.source_address,
            ),
            urllib.request.HTTPCookieProcessor(cookiejar),
            UnknownHandler(),
            HTTPDefaultErrorHandler(),
            HTTPErrorProcessor(),
            _HTTPOnlyRedirectHandler(),
        ]
        for handler in handlers:
            opener.add_handler(handler)
        opener.addheaders = []
        return opener


class PublicOnlyRH(HTTPOnlyRH):
    """The http(s)-only request handler whose every connection (first hop and each redirect)
    checks the address it is about to connect to."""

    RH_NAME = "urllib-public-only"
    http_handler_class = _GuardedHTTPHandler


def refused(exc: BaseException) -> UnsafeURL | None:
    """The UnsafeURL somewhere in an exception's chain (yt-dlp wraps it several times)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UnsafeURL):
            return current
        exc_info = getattr(current, "exc_info", None)
        pending += [
            current.__cause__,
            current.__context__,
            getattr(current, "cause", None) if isinstance(getattr(current, "cause", None), BaseException) else None,
            getattr(current, "reason", None) if isinstance(getattr(current, "reason", None), BaseException) else None,
            exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None,
        ]
    return None

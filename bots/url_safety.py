"""Keeping downloads away from the inside of our network (SSRF): only http and https, and only
hosts whose every address is public. The check runs on the link a member sent and again on
every connection yt-dlp opens, so a redirect, or a name that resolves differently the second
time, cannot reach an internal address either."""

import functools
import http.client
import ipaddress
import socket
import urllib.request
from urllib.parse import urlsplit

from yt_dlp.networking._helper import _socket_connect, create_connection
from yt_dlp.networking._urllib import (
    DataHandler,
    FTPHandler,
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
    return ip.is_global and not ip.is_multicast


class UnsafeAddress(UnsafeURL, OSError):
    """Raised while connecting: an OSError, so yt-dlp reports it as a transport error that
    carries it, rather than as a bug in its request handler."""


def check_address(address: str) -> None:
    if not is_public_address(address):
        raise UnsafeAddress(f"{address} is not a public address")


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


class PublicOnlyRH(UrllibRH):
    """yt-dlp's urllib request handler, http(s) only, whose every connection (first hop and
    each redirect) checks the address it is about to connect to. yt-dlp builds its opener
    in `_create_instance`; this is that opener with the guarded HTTP handler and without
    the file handler."""

    _SUPPORTED_URL_SCHEMES = ALLOWED_SCHEMES
    RH_NAME = "urllib-public-only"

    def _create_instance(self, proxies, cookiejar, legacy_ssl_support=None):
        opener = urllib.request.OpenerDirector()
        handlers = [
            ProxyHandler(proxies),
            _GuardedHTTPHandler(
                debuglevel=int(bool(self.verbose)),
                context=self._make_sslcontext(legacy_ssl_support=legacy_ssl_support),
                source_address=self.source_address,
            ),
            urllib.request.HTTPCookieProcessor(cookiejar),
            DataHandler(),
            UnknownHandler(),
            HTTPDefaultErrorHandler(),
            FTPHandler(),
            HTTPErrorProcessor(),
            RedirectHandler(),
        ]
        for handler in handlers:
            opener.add_handler(handler)
        opener.addheaders = []
        return opener


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

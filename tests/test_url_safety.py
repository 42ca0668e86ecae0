"""The SSRF guard: links to internal addresses are refused before and during the download,
including a name that resolves to loopback and a redirect to a private address."""

import socket

import pytest

from bots import downloads, url_safety
from queueing.errors import PermanentError
from tests.media_server import MediaServer


@pytest.fixture
def media():
    server = MediaServer().start()
    yield server
    server.stop()


@pytest.fixture
def guarded(settings, tmp_path):
    settings.DOWNLOADS_ALLOW_PRIVATE_HOSTS = False
    settings.DOWNLOADS_ROOT = tmp_path / "downloads"
    return tmp_path / "work"


def fetch_refused(url: str, folder) -> PermanentError:
    folder.mkdir(exist_ok=True)
    with pytest.raises(PermanentError) as caught:
        downloads.fetch(url, folder, lambda status: None)
    assert caught.value.user_message == downloads.REFUSED, caught.value
    return caught.value


def resolving(monkeypatch, names: dict[str, list[str]]) -> None:
    """Make getaddrinfo answer `names` with the given addresses, one list per call (the last repeats)."""
    real = socket.getaddrinfo
    calls: dict[str, int] = {}

    def fake(host, port, *args, **kwargs):
        if host not in names:
            return real(host, port, *args, **kwargs)
        answers = names[host]
        address = answers[min(calls.get(host, 0), len(answers) - 1)]
        calls[host] = calls.get(host, 0) + 1
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_internal_addresses_are_not_public(address):
    assert not url_safety.is_public_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_public(address):
    assert url_safety.is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://93.184.216.34/video.mp4",
        "http://127.0.0.1/video.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/video.mp4",
        "http://[::1]:8080/video.mp4",
        "https://localhost/video.mp4",
    ],
)
def test_links_to_internal_places_are_refused(guarded, url):
    error = fetch_refused(url, guarded)
    assert "Refused" in str(error)


def test_a_loopback_server_is_not_contacted(guarded, media):
    fetch_refused(media.url("/clip.mp4"), guarded)
    assert media.count("/clip.mp4") == 0


def test_a_public_looking_name_that_resolves_to_loopback_is_refused(guarded, media, monkeypatch):
    resolving(monkeypatch, {"media.example.com": ["127.0.0.1"]})

    error = fetch_refused(f"http://media.example.com:{media.port}/clip.mp4", guarded)

    assert "127.0.0.1" in str(error)
    assert media.count("/clip.mp4") == 0


def test_a_name_that_resolves_to_loopback_only_when_connecting_is_refused(guarded, media, monkeypatch):
    """DNS rebinding: public when checked, loopback when yt-dlp connects."""
    resolving(monkeypatch, {"rebind.example.com": ["93.184.216.34", "127.0.0.1"]})

    fetch_refused(f"http://rebind.example.com:{media.port}/clip.mp4", guarded)

    assert media.count("/clip.mp4") == 0


def test_a_redirect_to_a_private_address_is_refused(guarded, monkeypatch):
    """The first server stands for a public one (its address is let through); it redirects to
    a second server on another loopback address, which must never be asked."""
    public, private = MediaServer("127.0.0.1").start(), MediaServer("127.0.0.2").start()
    try:
        real = url_safety.is_public_address
        monkeypatch.setattr(url_safety, "is_public_address", lambda address: address == "127.0.0.1" or real(address))
        target = private.url("/clip.mp4")

        fetch_refused(public.url(f"/redirect?to={target}"), guarded)

        assert public.count("/redirect") == 1
        assert private.count("/clip.mp4") == 0
    finally:
        public.stop()
        private.stop()


def test_private_hosts_can_be_allowed(settings, tmp_path, media):
    settings.DOWNLOADS_ALLOW_PRIVATE_HOSTS = True
    folder = tmp_path / "work"
    folder.mkdir()

    fetched = downloads.fetch(media.url("/clip.mp4"), folder, lambda status: None)

    assert fetched.size == len(media.media)
    assert fetched.kind == "video"

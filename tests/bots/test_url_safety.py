"""The SSRF guard: links to internal addresses are refused before and during the download,
including a name that resolves to loopback, a redirect to a private address or to another
scheme, and an HLS stream whose key and segments are on an internal address.

Where an attack needs a public first hop, 127.0.0.2 stands for the public server
(URL_SAFETY_TREAT_AS_PUBLIC) and 127.0.0.1 for the inside of the network."""

import os
import socket
import sys

import pytest
from yt_dlp.downloader import HlsFD, get_suitable_downloader
from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

from bots.downloads import messages, url_safety, ytdlp
from queueing.errors import PermanentError
from tests.media_server import MediaServer, Tripwire

PUBLIC = "127.0.0.2"

# Stands for ffmpeg (not installed here, often installed next to yt-dlp): answers yt-dlp's
# version probe, and reads a stream's playlist, key and segments as ffmpeg does, unchecked.
FAKE_FFMPEG = f"""#!{sys.executable}
import re, sys, urllib.request
from urllib.parse import urljoin

if "-i" not in sys.argv:
    print("ffmpeg version 7.1 Copyright (c) 2000-2024 the FFmpeg developers")
    sys.exit(0)
playlist_url = sys.argv[sys.argv.index("-i") + 1]
playlist = urllib.request.urlopen(playlist_url, timeout=10).read().decode()
lines = [line for line in playlist.splitlines() if line and not line.startswith("#")]
for target in re.findall(r'URI="([^"]+)"', playlist) + lines:
    try:
        urllib.request.urlopen(urljoin(playlist_url, target), timeout=10).read()
    except OSError:
        pass
sys.exit(1)
"""


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


@pytest.fixture
def public_server(settings):
    """A media server on the loopback address that the guard lets through as public."""
    settings.URL_SAFETY_TREAT_AS_PUBLIC = [PUBLIC]
    server = MediaServer(PUBLIC).start()
    yield server
    server.stop()


@pytest.fixture
def tripwire():
    wire = Tripwire("127.0.0.1")
    yield wire
    wire.stop()


@pytest.fixture
def ffmpeg(tmp_path, monkeypatch):
    """FAKE_FFMPEG on the PATH, and yt-dlp's memory of which ffmpeg it found forgotten."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "ffmpeg").write_text(FAKE_FFMPEG)
    (folder / "ffmpeg").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(FFmpegPostProcessor, "_version_cache", {None: None})
    monkeypatch.setattr(FFmpegPostProcessor, "_features_cache", {})


def fetch_failed(url: str, folder) -> PermanentError:
    folder.mkdir(exist_ok=True)
    with pytest.raises(PermanentError) as caught:
        ytdlp.fetch(url, folder, lambda status: None)
    return caught.value


def fetch_refused(url: str, folder) -> PermanentError:
    error = fetch_failed(url, folder)
    assert error.user_message == messages.REFUSED, error
    return error


def options(folder) -> dict:
    return ytdlp.ydl_options(folder, ytdlp.Watchdog(10_000_000, 60, lambda status: None))


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
        "ftp://127.0.0.2/video.mp4",
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


def test_a_name_that_resolves_to_loopback_only_when_connecting_is_refused(guarded, media, monkeypatch, settings):
    """DNS rebinding: public when checked, loopback when yt-dlp connects."""
    settings.URL_SAFETY_TREAT_AS_PUBLIC = [PUBLIC]
    resolving(monkeypatch, {"rebind.example.com": [PUBLIC, "127.0.0.1"]})

    fetch_refused(f"http://rebind.example.com:{media.port}/clip.mp4", guarded)

    assert media.count("/clip.mp4") == 0


def test_only_the_listed_address_is_treated_as_public(settings):
    settings.URL_SAFETY_TREAT_AS_PUBLIC = [PUBLIC]

    assert url_safety.is_public_address(PUBLIC)
    assert not url_safety.is_public_address("127.0.0.1")


def test_a_redirect_to_a_private_address_is_refused(guarded, public_server, media):
    """The first server stands for a public one; it redirects to a second server on another
    loopback address, which must never be asked."""
    target = media.url("/clip.mp4")

    fetch_refused(public_server.url(f"/redirect?to={target}"), guarded)

    assert public_server.count("/redirect") == 1
    assert media.count("/clip.mp4") == 0


@pytest.mark.parametrize("scheme", ["ftp", "http"])
def test_a_redirect_to_an_internal_port_connects_nowhere_whatever_the_scheme(guarded, public_server, tripwire, scheme):
    error = fetch_refused(public_server.url(f"/redirect?to={tripwire.url('/x', scheme)}"), guarded)

    assert public_server.count("/redirect") == 1
    assert tripwire.connections() == 0
    assert "Refused" in str(error)


@pytest.mark.parametrize(
    ("playlist", "user_message"), [("sample-aes", messages.NO_FORMAT), ("plain", messages.REFUSED)]
)
def test_an_hls_stream_with_its_key_and_segments_inside_connects_nowhere(
    guarded, public_server, tripwire, ffmpeg, playlist, user_message
):
    """SAMPLE-AES is what yt-dlp's own HLS downloader hands to ffmpeg; a plain stream it
    fetches itself."""
    public_server.hls_elsewhere = tripwire.url()

    error = fetch_failed(public_server.url(f"/hls/{playlist}.m3u8"), guarded)

    assert error.user_message == user_message, error

    assert public_server.count(f"/hls/{playlist}.m3u8") >= 1, "the playlist itself was fetched"
    assert tripwire.connections() == 0


def test_no_external_downloader_runs_whatever_the_options_say(guarded, tripwire):
    """curl is installed here: given the chance, it would connect to the tripwire itself."""
    ydl = ytdlp.downloader({**options(guarded), "external_downloader": "curl"}, guarded=True)
    info = {"id": "x", "ext": "mp4", "url": tripwire.url("/clip.mp4"), "protocol": "http"}

    with pytest.raises(PermanentError) as caught:
        ydl.dl(str(guarded / "x.mp4"), info)

    assert "CurlFD" in str(caught.value)
    assert tripwire.connections() == 0


def test_only_formats_that_yt_dlp_fetches_itself_are_chosen(settings, tmp_path):
    settings.DOWNLOADS_ALLOW_PRIVATE_HOSTS = True
    ydl = ytdlp.downloader(options(tmp_path), guarded=False)
    formats = [
        {"format_id": "rtmp", "url": "rtmp://127.0.0.1/live", "ext": "mp4", "height": 1080},
        {"format_id": "ffmpeg-hls", "url": "http://127.0.0.1/a.m3u8", "protocol": "m3u8", "ext": "mp4", "height": 720},
        {"format_id": "https", "url": "https://127.0.0.1/a.mp4", "ext": "mp4", "height": 360},
    ]

    chosen = ydl.process_ie_result({"id": "x", "title": "x", "formats": formats}, download=False)

    assert chosen["format_id"] == "ffmpeg-hls" and chosen["protocol"] == "m3u8"
    assert get_suitable_downloader(chosen, ydl.params) is HlsFD, "HLS by yt-dlp, not ffmpeg"
    chosen = ydl.process_ie_result({"id": "x", "title": "x", "formats": [formats[0], formats[2]]}, download=False)
    assert chosen["format_id"] == "https"


def test_where_private_hosts_are_allowed_downloads_still_speak_http_only(settings, tmp_path, media, tripwire):
    settings.DOWNLOADS_ALLOW_PRIVATE_HOSTS = True

    fetch_refused(media.url(f"/redirect?to={tripwire.url('/x', 'ftp')}"), tmp_path / "work")

    assert media.count("/redirect") == 1
    assert tripwire.connections() == 0


def test_private_hosts_can_be_allowed(settings, tmp_path, media):
    settings.DOWNLOADS_ALLOW_PRIVATE_HOSTS = True
    folder = tmp_path / "work"
    folder.mkdir()

    fetched = ytdlp.fetch(media.url("/clip.mp4"), folder, lambda status: None)

    assert fetched.size == len(media.media)
    assert fetched.kind == "video"

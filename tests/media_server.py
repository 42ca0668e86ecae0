"""A media server on loopback for download tests and the benchmark: serves real media files,
counts requests per path, and misbehaves on demand.

    /clip.mp4              the fixture video
    /slow/clip.mp4         the same, a few kilobytes at a time with pauses (`slow_seconds` in all)
    /track.mp3             a second of silence (MPEG-1 Layer III frames), as audio/mpeg
    /photo.png             a 96x64 picture, as image/png
    /sound.wav             a second of a tone (PCM), as audio/wav: audio Telegram does not play
    /missing.mp4           404
    /error.mp4             503
    /page.html             an HTML page with no media in it
    /drop.mp4              promises the whole file, sends a little, drops the connection
    /redirect?to=URL       302 to URL
    /hls/NAME.m3u8         an HLS playlist from HLS_PLAYLISTS whose key and segments are at
                           `hls_elsewhere` (a base URL: another server's, a Tripwire's)

Any path in `gone` is answered 404 until it is taken out again; `on_request(path)`, if set, runs
before a request is answered (`full_disk` fills the disk under a running download). A
Tripwire counts the connections made to it, for tests that must prove none was. The fixtures other than
clip.mp4 were written by a few lines of Python (zlib for the PNG, wave for the WAV, silent
frames for the MP3), so no media tool is needed.
"""

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, urlsplit

# Every write to it fails with ENOSPC (Linux).
DEV_FULL = Path("/dev/full")
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CLIP = FIXTURES / "clip.mp4"
FILES = {"/track.mp3": "audio/mpeg", "/photo.png": "image/png", "/sound.wav": "audio/wav"}

HLS_PLAYLISTS = {
    # yt-dlp's own HLS downloader cannot decrypt SAMPLE-AES and hands such a stream to ffmpeg.
    "sample-aes": '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="{elsewhere}/key",KEYFORMAT="identity"\n',
    "plain": "",
}
HLS_PLAYLIST = (
    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n{key}"
    "#EXTINF:2.0,\n{elsewhere}/segment0.ts\n#EXTINF:2.0,\n{elsewhere}/segment1.ts\n#EXT-X-ENDLIST\n"
)

PAGE = b"<!doctype html><html><head><title>Our news</title></head><body><p>Nothing to watch here.</p></body></html>"


class MediaServer:
    def __init__(self, host: str = "127.0.0.1", media: bytes | None = None, slow_seconds: float = 2.0):
        self.host = host
        self.media = media if media is not None else CLIP.read_bytes()
        self.slow_seconds = slow_seconds
        self.files = {path: ((FIXTURES / path.lstrip("/")).read_bytes(), kind) for path, kind in FILES.items()}
        self.gone: set[str] = set()
        self.hls_elsewhere = ""
        self.on_request: Callable[[str], None] | None = None
        self.requests: Counter[str] = Counter()
        self.requested_at: list[tuple[float, str]] = []  # (time.time(), path with its query)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Self:
        self._server = ThreadingHTTPServer((self.host, 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="media-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def count(self, path: str) -> int:
        with self._lock:
            return self.requests[path]

    def _record(self, path: str, path_and_query: str) -> None:
        with self._lock:
            self.requests[path] += 1
            self.requested_at.append((time.time(), path_and_query))


def _handler(server: MediaServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self.do_GET(head=True)

        def do_GET(self, head: bool = False) -> None:
            parts = urlsplit(self.path)
            server._record(parts.path, self.path)
            if server.on_request:
                server.on_request(parts.path)
            name = parts.path.removeprefix("/hls/").removesuffix(".m3u8")
            if parts.path in server.gone:
                self._send(404, b"Not Found", "text/plain", head)
            elif parts.path == "/clip.mp4":
                self._send(200, server.media, "video/mp4", head)
            elif parts.path == "/slow/clip.mp4":
                self._send(200, server.media, "video/mp4", head, pause=True)
            elif parts.path in server.files:
                self._send(200, *server.files[parts.path], head)
            elif parts.path.startswith("/hls/") and name in HLS_PLAYLISTS:
                key = HLS_PLAYLISTS[name].format(elsewhere=server.hls_elsewhere)
                playlist = HLS_PLAYLIST.format(key=key, elsewhere=server.hls_elsewhere)
                self._send(200, playlist.encode(), "application/vnd.apple.mpegurl", head)
            elif parts.path == "/page.html":
                self._send(200, PAGE, "text/html; charset=utf-8", head)
            elif parts.path == "/error.mp4":
                self._send(503, b"Service Unavailable", "text/plain", head)
            elif parts.path == "/drop.mp4":
                self._drop(head)
            elif parts.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", parse_qs(parts.query)["to"][0])
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(404, b"Not Found", "text/plain", head)

        def _send(self, status: int, body: bytes, content_type: str, head: bool, pause: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if head:
                return
            if not pause:
                # yt-dlp's extractor reads the start of a file and hangs up: not an error.
                with contextlib.suppress(OSError):
                    self.wfile.write(body)
                return
            chunks = [body[i : i + 2048] for i in range(0, len(body), 2048)]
            for chunk in chunks:
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(server.slow_seconds / len(chunks))

        def _drop(self, head: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(server.media)))
            self.end_headers()
            if not head:
                self.wfile.write(server.media[:1000])
                self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


def full_disk(root: Path, part_file: str) -> Callable[[str], None]:
    """An `on_request` that makes the part file of every download under `root` a link to
    /dev/full before the server answers: yt-dlp opens it as usual, and its writes fail in the
    kernel with ENOSPC, exactly as on a full disk (the removal of the folder removes the link)."""

    def fill(_path: str) -> None:
        for folder in root.iterdir():
            part = folder / part_file
            # A folder may be removed meanwhile: its download has ended.
            with contextlib.suppress(FileNotFoundError, FileExistsError):
                if folder.is_dir() and not part.is_symlink():
                    part.symlink_to(DEV_FULL)

    return fill


class Tripwire:
    """A listening socket on loopback that accepts, counts and closes every connection made to it."""

    def __init__(self, host: str = "127.0.0.1"):
        self._socket = socket.create_server((host, 0))
        self.host, self.port = host, self._socket.getsockname()[1]
        self._peers: list[tuple] = []
        self._probes: set[tuple] = set()
        self._changed = threading.Condition()
        threading.Thread(target=self._accept, name="tripwire", daemon=True).start()

    def url(self, path: str = "", scheme: str = "http") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    def connections(self) -> int:
        """How many connections were made so far. It makes one of its own and waits until that
        one is accepted: connections are accepted in order, so every earlier one is counted."""
        with socket.create_connection((self.host, self.port)) as probe:
            peer = probe.getsockname()[:2]
            self._probes.add(peer)
            with self._changed:
                assert self._changed.wait_for(lambda: peer in self._peers, timeout=10), "the probe was not accepted"
        with self._changed:
            return len([peer for peer in self._peers if peer not in self._probes])

    def stop(self) -> None:
        self._socket.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, peer = self._socket.accept()
            except OSError:
                return
            connection.close()
            with self._changed:
                self._peers.append(peer[:2])
                self._changed.notify_all()

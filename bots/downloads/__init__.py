"""Media downloads: a member sends a link (bots.download_requests answers it on the telegram
queue: from the cache, refused, or queued) and this package fetches the file and sends it back.

- job: the download job (downloads queue), run by bots.tasks.download_media
- ytdlp, errors: yt-dlp with our options, its failures as permanent or retriable errors
- url_safety: only public http(s) addresses, on every connection yt-dlp opens
- folders: a folder per download, swept when a worker died
- progress: the member's progress message
- upload: the file sent to Telegram, its file_id remembered for the same link next time
- messages: what the member reads"""

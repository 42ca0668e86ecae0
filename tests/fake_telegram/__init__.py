"""A fake Telegram Bot API server for tests, benchmarks and the no-token demo.

    from tests.fake_telegram import FakeTelegram, make_token, updates

    with FakeTelegram().start() as fake:
        bot = telegram.Bot(make_token(), base_url=fake.base_url)

Standalone: `python -m tests.fake_telegram --port 8081`, driven with FakeTelegramControl.
"""

from tests.fake_telegram import updates
from tests.fake_telegram.control import FakeTelegramControl
from tests.fake_telegram.delivery import SECRET_HEADER, post_update, post_update_async
from tests.fake_telegram.objects import (
    bot_user,
    channel_chat,
    get_me_result,
    group_chat,
    make_token,
    make_user,
    private_chat,
)
from tests.fake_telegram.records import Call, Fault, UploadedFile
from tests.fake_telegram.server import FakeTelegram, RateLimiter

__all__ = [
    "SECRET_HEADER",
    "Call",
    "FakeTelegram",
    "FakeTelegramControl",
    "Fault",
    "RateLimiter",
    "UploadedFile",
    "bot_user",
    "channel_chat",
    "get_me_result",
    "group_chat",
    "make_token",
    "make_user",
    "post_update",
    "post_update_async",
    "private_chat",
    "updates",
]

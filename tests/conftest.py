import pytest
from django.conf import settings
from django.core.servers.basehttp import WSGIServer

from tests.clusters import ClusterProcess

# Headless Chromium fixtures (browser, staff_browser, screenshots) for every admin page test.
pytest_plugins = ["tests.browser"]

# The live server listens with Django's backlog of 10; Telegram opens up to 40 webhook
# connections at once, and an overflowing backlog stalls them for seconds under load.
# Production's gunicorn listens with 2048.
WSGIServer.request_queue_size = 128


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.test_failed = report.failed
    return report


@pytest.fixture
def clusters(transactional_db, tmp_path, request):
    """Start real qcluster processes: `clusters.start("telegram")`. All are stopped after the test."""

    class Clusters:
        def __init__(self):
            self.running: list[ClusterProcess] = []

        def start(self, queue: str, **env: str) -> ClusterProcess:
            cluster = ClusterProcess(queue, tmp_path, **env).start()
            self.running.append(cluster)
            return cluster

    _flush_broker()
    started = Clusters()
    yield started
    for cluster in started.running:
        try:
            cluster.stop()
        except RuntimeError:
            cluster.kill()
        if getattr(request.node, "test_failed", False):
            print(f"--- log of qcluster {cluster.queue} (last 60 lines)", *cluster.log().splitlines()[-60:], sep="\n")
    _flush_broker()


def _flush_broker() -> None:
    if settings.REDIS_URL:
        import redis

        client = redis.from_url(settings.REDIS_URL)
        keys = client.keys("django_q:*")
        if keys:
            client.delete(*keys)


@pytest.fixture
def fake_telegram():
    from tests.fake_telegram import FakeTelegram

    fake = FakeTelegram().start()
    yield fake
    fake.stop()


@pytest.fixture
def telegram_bot(transactional_db, fake_telegram):
    """A bot whose Bot API is the fake Telegram."""
    from bots import views
    from bots.models import Bot
    from tests.fake_telegram import make_token

    views._bots.clear()
    yield Bot.objects.create(
        token=make_token(7000001), webhook_secret=Bot.new_secret(), api_base_url=fake_telegram.base_url
    )
    views._bots.clear()


@pytest.fixture
def webhook_bot(telegram_bot, live_server):
    """The bot with its webhook set (by our own command) to this test's live server, so
    `fake_telegram.push_update(bot.token, update)` reaches the webhook as Telegram would."""
    from django.core.management import call_command

    call_command("set_webhook", "--url", live_server.url, "--bot", str(telegram_bot.telegram_id))
    return telegram_bot

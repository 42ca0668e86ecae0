import pytest
from django.contrib.auth.models import User

from bots.models import Bot
from tests.fake_telegram.objects import make_token


@pytest.fixture
def bot(db) -> Bot:
    return Bot.objects.create(token=make_token(7100001), webhook_secret=Bot.new_secret())


@pytest.fixture
def staff(client):
    """A client logged in as a superuser."""
    client.force_login(User.objects.create_superuser("operator", "ops@example.com", "a long password"))
    return client

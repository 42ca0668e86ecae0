"""The admin login is rate-limited (django-axes) per IP address and per user name: after
LOGIN_FAILURE_LIMIT wrong passwords the address, or the name, is refused (429) even with the
right password, for LOGIN_COOLOFF_MINUTES; others are not affected."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

PASSWORD = "the right long password"
LOCKED = 429


@pytest.fixture(autouse=True)
def staff():
    for name in ("alice", "bob"):
        User.objects.create_user(name, password=PASSWORD, is_staff=True)


def log_in(username: str, password: str, ip: str) -> int:
    response = Client(REMOTE_ADDR=ip).post(
        reverse("admin:login"), {"username": username, "password": password, "next": reverse("admin:index")}
    )
    return response.status_code


def fail_until_locked(usernames_and_ips: list[tuple[str, str]]) -> list[int]:
    return [log_in(username, "wrong", ip) for username, ip in usernames_and_ips]


def test_the_defaults_are_five_failures_and_fifteen_minutes():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60


def test_wrong_passwords_lock_the_user_out_and_the_right_one_is_refused_meanwhile():
    statuses = fail_until_locked([("alice", "127.0.0.10")] * settings.AXES_FAILURE_LIMIT)
    assert statuses == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [LOCKED]
    assert log_in("alice", PASSWORD, "127.0.0.10") == LOCKED
    assert log_in("bob", PASSWORD, "127.0.0.11") == 302


def test_a_user_name_is_locked_whichever_addresses_the_attempts_come_from():
    fail_until_locked([("alice", f"127.0.1.{n}") for n in range(settings.AXES_FAILURE_LIMIT)])
    assert log_in("alice", PASSWORD, "127.0.1.200") == LOCKED
    assert log_in("bob", PASSWORD, "127.0.1.201") == 302


def test_an_address_is_locked_whichever_user_names_it_tries():
    fail_until_locked([(f"guess{n}", "127.0.2.1") for n in range(settings.AXES_FAILURE_LIMIT)])
    assert log_in("bob", PASSWORD, "127.0.2.1") == LOCKED
    assert log_in("bob", PASSWORD, "127.0.2.2") == 302


def test_the_lock_ends_after_the_cool_off():
    fail_until_locked([("alice", "127.0.3.1")] * settings.AXES_FAILURE_LIMIT)
    assert log_in("alice", PASSWORD, "127.0.3.1") == LOCKED
    past_cool_off = AccessAttempt.objects.get().attempt_time - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    AccessAttempt.objects.update(attempt_time=past_cool_off)
    assert log_in("alice", PASSWORD, "127.0.3.1") == 302


def test_a_client_cannot_pick_its_address_with_x_forwarded_for():
    """Without LOGIN_PROXY_COUNT no proxy is trusted: the header is ignored."""
    for n in range(settings.AXES_FAILURE_LIMIT):
        Client(REMOTE_ADDR="127.0.4.1", HTTP_X_FORWARDED_FOR=f"127.0.9.{n}").post(
            reverse("admin:login"), {"username": f"guess{n}", "password": "wrong"}
        )
    assert log_in("bob", PASSWORD, "127.0.4.1") == LOCKED


def behind_nginx(client_address: str, spoofed: str) -> Client:
    return Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=f"{spoofed}, {client_address}")


def test_behind_a_proxy_the_address_is_the_one_it_appended(settings):
    settings.LOGIN_PROXY_COUNT = 1
    for n in range(settings.AXES_FAILURE_LIMIT):
        behind_nginx("127.0.5.1", spoofed=f"127.0.9.{n}").post(
            reverse("admin:login"), {"username": f"guess{n}", "password": "wrong"}
        )
    login = {"username": "bob", "password": PASSWORD, "next": reverse("admin:index")}
    assert behind_nginx("127.0.5.1", spoofed="127.0.9.99").post(reverse("admin:login"), login).status_code == LOCKED
    assert behind_nginx("127.0.5.2", spoofed="127.0.5.1").post(reverse("admin:login"), login).status_code == 302

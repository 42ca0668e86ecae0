"""Downloads and the media cache in the admin: staff only, read-only lists an operator filters
and searches, a link from a download to its job, and forgetting cached media."""

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from bots.models import Bot, Download, MediaCache, TelegramUser
from queueing.models import JobRecord
from tests.fake_telegram import make_token

pytestmark = pytest.mark.django_db

DOWNLOADS = "admin:bots_download_changelist"
CACHE = "admin:bots_mediacache_changelist"


@pytest.fixture
def bot() -> Bot:
    return Bot.objects.create(token=make_token(7300001))


@pytest.fixture
def ann(bot) -> TelegramUser:
    return TelegramUser.objects.create(bot=bot, telegram_id=701, first_name="Ann", username="ann")


@pytest.fixture
def bob(bot) -> TelegramUser:
    return TelegramUser.objects.create(bot=bot, telegram_id=702, first_name="Bob")


def download(member: TelegramUser, url: str, **fields) -> Download:
    created = timezone.now() - timedelta(minutes=5)
    defaults = {"bot": member.bot, "chat_id": member.telegram_id, "created_at": created}
    return Download.objects.create(member=member, url=url, **{**defaults, **fields})


def listed(client, name: str, **params) -> list:
    response = client.get(reverse(name), params)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


@pytest.mark.parametrize("name", [DOWNLOADS, CACHE])
def test_only_staff_with_the_view_permission_see_them(client, django_user_model, name):
    assert client.get(reverse(name)).url.startswith(reverse("admin:login"))
    client.force_login(django_user_model.objects.create_user("member"))
    assert client.get(reverse(name)).url.startswith(reverse("admin:login"))
    staff = django_user_model.objects.create_user("staff", is_staff=True)
    client.force_login(staff)
    assert client.get(reverse(name)).status_code == 403

    model = name.split("_")[1]
    staff.user_permissions.add(Permission.objects.get(codename=f"view_{model}"))

    assert client.get(reverse(name)).status_code == 200


def test_the_download_list_shows_url_member_size_time_outcome_and_job(admin_client, ann, bob):
    job = JobRecord.objects.create(queue="downloads", kind="bots.tasks.download_media", args=[1])
    created = timezone.now() - timedelta(minutes=5)
    sent = download(
        ann,
        "https://videos.example/watch?v=1",
        job=job,
        status=Download.Status.SENT,
        kind="video",
        size=3 * 1024 * 1024,
        finished_at=created + timedelta(seconds=12.5),
    )
    cached = download(bob, "https://videos.example/watch?v=2", status="sent", kind="audio", from_cache=True)
    failed = download(bob, "https://videos.example/gone", status="failed", error="PermanentError: HTTP Error 404")

    html = admin_client.get(reverse(DOWNLOADS)).content.decode()

    assert "https://videos.example/watch?v=1" in html and "Ann" in html
    assert "3.0\xa0MB" in html
    assert "12.5 s" in html
    assert "sent video" in html and "sent audio from the cache" in html
    assert "PermanentError: HTTP Error 404" in html
    assert f'<a href="{reverse("admin:queueing_jobrecord_change", args=[job.pk])}">job {job.pk}</a>' in html
    assert {row.pk for row in listed(admin_client, DOWNLOADS)} == {sent.pk, cached.pk, failed.pk}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status__exact": "failed"}, {"gone"}),
        ({"from_cache__exact": "1"}, {"cached"}),
        ({"kind__exact": "video"}, {"sent"}),
        ({"q": "watch"}, {"sent", "cached"}),
        ({"q": "701"}, {"sent"}),
        ({"q": "ann"}, {"sent"}),
        ({"q": "404"}, {"gone"}),
    ],
)
def test_the_download_list_filters_and_searches(admin_client, ann, bob, params, expected):
    rows = {
        "sent": download(ann, "https://videos.example/watch?v=1", status="sent", kind="video"),
        "cached": download(bob, "https://videos.example/watch?v=2", status="sent", kind="audio", from_cache=True),
        "gone": download(bob, "https://videos.example/gone", status="failed", error="HTTP Error 404"),
    }

    shown = {row.pk for row in listed(admin_client, DOWNLOADS, **params)}

    assert shown == {rows[name].pk for name in expected}


def test_a_download_is_read_only_and_only_a_finished_one_can_be_deleted(admin_client, ann):
    job = JobRecord.objects.create(queue="downloads", kind="bots.tasks.download_media", args=[1])
    running = download(ann, "https://videos.example/now", status="running", job=job)
    done = download(ann, "https://videos.example/then", status="sent", finished_at=timezone.now())

    page = admin_client.get(reverse("admin:bots_download_change", args=[running.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="_save"' not in html
    assert reverse("admin:queueing_jobrecord_change", args=[job.pk]) in html
    assert admin_client.get(reverse("admin:bots_download_add")).status_code == 403
    assert admin_client.get(reverse("admin:bots_download_delete", args=[running.pk])).status_code == 403
    admin_client.post(reverse("admin:bots_download_delete", args=[done.pk]), {"post": "yes"})
    assert list(Download.objects.all()) == [running]


def cache_entry(bot: Bot, url: str, **fields) -> MediaCache:
    defaults = {"format_key": "v1-52428800", "file_id": f"BAAC{url[-1]}", "kind": "video", "title": "A clip"}
    return MediaCache.objects.create(bot=bot, url=url, **{**defaults, **fields})


def test_the_cache_lists_and_searches_what_telegram_holds(admin_client, bot):
    clip = cache_entry(bot, "https://videos.example/1", title="Our march", size=2048)
    track = cache_entry(bot, "https://music.example/2", kind="audio", title="A song")

    html = admin_client.get(reverse(CACHE)).content.decode()

    assert "https://videos.example/1" in html and "Our march" in html and "2.0\xa0KB" in html
    assert [row.pk for row in listed(admin_client, CACHE, q="march")] == [clip.pk]
    assert [row.pk for row in listed(admin_client, CACHE, kind__exact="audio")] == [track.pk]
    page = admin_client.get(reverse("admin:bots_mediacache_change", args=[clip.pk])).content.decode()
    assert 'name="_save"' not in page
    assert admin_client.get(reverse("admin:bots_mediacache_add")).status_code == 403


def test_forgetting_cached_media_makes_the_next_request_download_again(admin_client, bot):
    forget, keep = cache_entry(bot, "https://videos.example/1"), cache_entry(bot, "https://videos.example/2")
    data = {"action": "forget_selected", ACTION_CHECKBOX_NAME: [forget.pk], "index": "0"}

    response = admin_client.post(reverse(CACHE), data, follow=True)

    assert "Forgot 1 cached media." in response.content.decode()
    assert list(MediaCache.objects.all()) == [keep]
    assert "delete_selected" not in response.content.decode()

"""With DEBUG=0 and no collected static files the admin is a 500 (whitenoise's manifest):
the system check says so on every management command that runs checks."""

import pytest
from django.core import checks
from django.core.management import call_command

from config import settings as config_settings
from config.checks import NO_MANIFEST


def warnings_about_static() -> list[str]:
    return [message.id for message in checks.run_checks(tags=[checks.Tags.staticfiles])]


@pytest.fixture
def production(settings, tmp_path):
    settings.DEBUG = False
    settings.STATIC_ROOT = tmp_path / "static"
    # The production storage (tests serve static files without a manifest).
    settings.STORAGES = {**settings.STORAGES, "staticfiles": config_settings.STORAGES["staticfiles"]}
    return settings


def test_debug_off_without_collected_files_warns(production):
    assert NO_MANIFEST in warnings_about_static()


def test_collectstatic_silences_it(production):
    call_command("collectstatic", "--noinput", verbosity=0)
    assert NO_MANIFEST not in warnings_about_static()


def test_debug_on_needs_no_collected_files(production):
    production.DEBUG = True
    assert NO_MANIFEST not in warnings_about_static()

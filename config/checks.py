"""System checks for mistakes a deployment makes once and pays for on every page."""

from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.core.files.storage import storages

NO_MANIFEST = "config.W001"


@register(Tags.staticfiles)
def static_files_collected(app_configs, **kwargs) -> list[Warning]:
    """With DEBUG=0 whitenoise serves static files from the manifest `collectstatic` writes;
    without it every page that names a static file (the admin's login page first) is a 500."""
    if settings.DEBUG:
        return []
    # A new instance: it reads the STATIC_ROOT of now, not of the first use.
    storage = storages.create_storage(settings.STORAGES["staticfiles"])
    manifest = getattr(storage, "manifest_name", None)
    if manifest is None or storage.manifest_storage.exists(manifest):
        return []
    return [
        Warning(
            f"DEBUG=0 and no static files collected (no {manifest} in {settings.STATIC_ROOT}): "
            "every admin page will be a server error.",
            hint="Run `manage.py collectstatic --noinput` (again after each upgrade).",
            id=NO_MANIFEST,
        )
    ]

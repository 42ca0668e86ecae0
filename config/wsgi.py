import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()
# Imports every view module now, in gunicorn's master (preload_app), rather than in each
# forked worker's first request.
get_resolver().url_patterns  # noqa: B018

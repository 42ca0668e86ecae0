from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    # First: Telegram's webhook is the hottest path, and every pattern before it is tried in turn.
    path("", include("bots.urls")),
    path("", include("queueing.urls")),
    path("admin/", admin.site.urls),
    path("", include("broadcasts.urls")),
]

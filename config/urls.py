from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("queueing.urls")),
    path("admin/", admin.site.urls),
    path("", include("bots.urls")),
    path("", include("broadcasts.urls")),
]

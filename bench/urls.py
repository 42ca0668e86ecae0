"""The project's URLs and the two baselines bench.webhook compares the webhook with."""

from django.urls import path

from bench import views
from config.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    path("bench/ok/", views.ok, name="bench-ok"),
    path("bench/insert/", views.insert, name="bench-insert"),
    *project_urlpatterns,
]

from django.contrib import admin
from django.urls import path

from queueing import dashboard, views

app_name = "queueing"
urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.prometheus_metrics, name="metrics"),
    # Under /admin/ for the admin's login and look; before admin.site.urls, whose catch-all would take them.
    path("admin/queues/", admin.site.admin_view(dashboard.dashboard_view), name="dashboard"),
    path("admin/queues/data.json", admin.site.admin_view(dashboard.dashboard_json), name="dashboard_json"),
]

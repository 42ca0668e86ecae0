from django.urls import path

from bots import views

app_name = "bots"
urlpatterns = [
    path("telegram/<int:telegram_id>/webhook/", views.webhook, name="webhook"),
]

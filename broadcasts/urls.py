from django.urls import path

from broadcasts import views

app_name = "broadcasts"
urlpatterns = [
    path("l/<str:token>/", views.follow_click, name="click"),
]

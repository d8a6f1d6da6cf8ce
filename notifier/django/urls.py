"""``path("notifications/", include("notifier.django.urls"))``: the token view."""

from django.urls import path

from notifier.django import views

app_name = "notifier"
urlpatterns = [path("token/<str:task_id>", views.token, name="token")]

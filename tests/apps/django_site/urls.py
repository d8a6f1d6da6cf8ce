"""The token view under /notifications/, a login page, the watch page and its start view."""

from django.contrib.auth.views import LoginView
from django.urls import include, path
from django.views.generic import TemplateView

from apps.django_site import views

urlpatterns = [
    path("notifications/", include("notifier.django.urls")),
    path("login/", LoginView.as_view(template_name="django_site/login.html"), name="login"),
    path(
        "watch/",
        TemplateView.as_view(
            template_name="notifier/watch.html", extra_context={"start_url": "/start/"}
        ),
        name="watch",
    ),
    path("start/", views.start, name="start"),
]

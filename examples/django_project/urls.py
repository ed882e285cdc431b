from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("ready", views.ready),
    path("worker", views.worker),
    path("accounts", views.open_account),
    path("accounts/<uuid:account_id>/deposits", views.deposit),
]

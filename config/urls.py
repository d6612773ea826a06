from django.contrib import admin
from django.urls import include, path

from studyapp.throttle import admin_login

urlpatterns = [
    path("admin/login/", admin_login),  # before admin.site.urls: the same login, behind a failure limit
    path("admin/", admin.site.urls),
    path("", include("studyapp.urls")),
    path("", include("evaluator.urls")),
]

"""Who is asking (behind our one trusted proxy or not), and the admin login's brute-force limit."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.shortcuts import render

from studyapp.services.ratelimit import rate_count, rate_peek

_LOGIN_WINDOW_S = 15 * 60


def client_address(request) -> str:
    """The client's address: behind our one trusted proxy, the entry it appended to
    X-Forwarded-For (earlier entries come from the client and can be forged); else the peer."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.BEHIND_PROXY and forwarded:
        return forwarded.rsplit(",", 1)[-1].strip()[:64]
    return request.META.get("REMOTE_ADDR", "")


def _failures_key(request) -> str:
    return f"admin:login-failures:{client_address(request)}"


@receiver(user_login_failed)
def _count_failure(sender, credentials, request=None, **kwargs) -> None:
    # Not serialised: under a burst of parallel guesses the count can lag by a few, which still caps
    # guessing at a handful a minute.
    if request is not None:
        rate_count(key=_failures_key(request), window_s=_LOGIN_WINDOW_S)


def admin_login(request, extra_context=None):
    """The admin login, refusing to check any password from an address with too many recent failures."""
    if request.method == "POST" and rate_peek(key=_failures_key(request)) >= settings.ADMIN_LOGIN_MAX_FAILURES:
        response = render(request, "admin/login_throttled.html", {**admin.site.each_context(request)}, status=429)
        response["Retry-After"] = str(_LOGIN_WINDOW_S)
        return response
    return admin.site.login(request, extra_context)

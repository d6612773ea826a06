"""Who is asking (behind our one trusted proxy or not), and the admin login's brute-force limit."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.signals import user_login_failed
from django.core.cache import caches
from django.dispatch import receiver
from django.shortcuts import render

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
    if request is None:
        return
    cache = caches["ratelimit"]
    # add() opens a 15-minute window, incr() keeps its expiry. Under a burst of parallel guesses the
    # read-then-write count can lag by a few; the limit still caps guessing at a handful a minute.
    if not cache.add(_failures_key(request), 1, timeout=_LOGIN_WINDOW_S):
        try:
            cache.incr(_failures_key(request))
        except ValueError:
            cache.add(_failures_key(request), 1, timeout=_LOGIN_WINDOW_S)


def admin_login(request, extra_context=None):
    """The admin login, refusing to check any password from an address with too many recent failures."""
    failures = caches["ratelimit"].get(_failures_key(request), 0)
    if request.method == "POST" and failures >= settings.ADMIN_LOGIN_MAX_FAILURES:
        response = render(request, "admin/login_throttled.html", {**admin.site.each_context(request)}, status=429)
        response["Retry-After"] = str(_LOGIN_WINDOW_S)
        return response
    return admin.site.login(request, extra_context)

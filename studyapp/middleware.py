import logging
import re
import uuid

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.utils import translation

from studyapp.models import Study

logger = logging.getLogger(__name__)


class ParticipantLanguageMiddleware:
    """Participant pages speak their study's language (Study.language), error pages included (404, CSRF
    failure, bad answer, 500, 503), so that a participant of a Korean study sees no English. Elsewhere (the
    admin, reports) English.

    A study's language is frozen once it is open, so it is cached per process: a trial costs no query for it.
    Where the study is unknown or the database is down, the browser's Accept-Language picks among LANGUAGES.
    """

    _CACHE_LIMIT = 10_000
    _languages: dict[uuid.UUID, str] = {}

    def __init__(self, get_response):
        self.get_response = get_response
        prefix = re.escape(settings.PARTICIPANT_URL_PREFIX)
        self._study_path = re.compile(prefix + r"([0-9a-fA-F-]{32,36})(?:/|$)")

    def __call__(self, request):
        if not request.path.startswith(settings.PARTICIPANT_URL_PREFIX):
            return self.get_response(request)
        language = self._language(request)
        with translation.override(language):
            response = self.get_response(request)
        response.headers.setdefault("Content-Language", language)
        return response

    def _language(self, request) -> str:
        match = self._study_path.match(request.path)
        code = None
        if match:
            try:
                code = uuid.UUID(match[1])
            except ValueError:
                code = None
        if code is not None:
            cached = self._languages.get(code)
            if cached:
                return cached
            try:
                row = Study.objects.filter(code=code).values_list("language", "status").first()
            except DatabaseError:
                row = None  # the outage page still needs a language: the browser's
            if row is not None:
                language, status = row
                if status != Study.Status.DRAFT:
                    if len(self._languages) >= self._CACHE_LIMIT:
                        self._languages.clear()
                    self._languages[code] = language
                return language
        return translation.get_language_from_request(request)


class SecurityHeadersMiddleware:
    """CSP and friends on every response: no inline script, nothing loaded from other origins."""

    # style-src allows inline styles only for the admin and plotly's generated SVG attributes.
    POLICY = (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.POLICY)
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if request.path.startswith(settings.PARTICIPANT_URL_PREFIX):
            # Trial pages and images must not linger in shared caches or the back-forward cache.
            response.headers.setdefault("Cache-Control", "no-store")
        return response


class DatabaseUnavailableMiddleware:
    """A database outage inside a view (unreachable, restarting, locked): a 503 a participant understands,
    not a traceback. Installed inside SecurityHeadersMiddleware, so the page gets the same headers."""

    RETRY_AFTER_SECONDS = 30

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        # The view's transaction has been rolled back by now, so nothing was half-written, and reloading
        # later is safe because answers are idempotent. Rendered without a request: touches no database.
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.error("database unavailable during %s %s: %s", request.method, request.path, exception)
        response = HttpResponse(render_to_string("503.html"), status=503)
        response["Retry-After"] = str(self.RETRY_AFTER_SECONDS)
        return response

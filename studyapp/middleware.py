from django.conf import settings


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

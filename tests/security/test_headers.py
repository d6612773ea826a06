"""Security headers and script hygiene on every participant-facing response, error pages included."""

import re

import pytest
from django.test import Client

from tests.factories import make_dataset, make_study
from tests.security.crawl import crawl_participant_pages
from tests.studyapp.helpers import consent

pytestmark = pytest.mark.django_db


@pytest.fixture
def crawl():
    return crawl_participant_pages()


def csp(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def test_every_response_has_a_strict_csp_and_denies_framing_sniffing_and_referrers(crawl):
    for hop in crawl.hops:
        policy = csp(hop.headers["Content-Security-Policy"])
        assert policy["script-src"] == ["'self'"], hop  # no inline script, no eval, no other origin
        assert policy["default-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"], hop
        assert policy["base-uri"] == ["'none'"] and policy["form-action"] == ["'self'"], hop
        assert hop.headers["X-Frame-Options"] == "DENY", hop
        assert hop.headers["X-Content-Type-Options"] == "nosniff", hop
        assert hop.headers["Referrer-Policy"] == "same-origin", hop
        assert hop.headers["Cross-Origin-Opener-Policy"] == "same-origin", hop


def test_participant_pages_are_never_cached_and_images_only_by_the_participants_own_browser(crawl):
    for hop in crawl.hops:
        if not hop.url.startswith("/s/"):
            continue
        if "/examples/" in hop.url and hop.status == 200:
            # Labelled by design and the same on every trial: the participant's own browser may keep them.
            assert hop.headers["Cache-Control"] == "private, max-age=86400", hop
        elif hop.url.endswith("/image") and hop.status == 200:
            # The trial page prefetches the next trial's photo; only the owner's browser may keep it (issue 15).
            assert hop.headers["Cache-Control"] == "private, max-age=3600", hop
        else:
            assert "no-store" in hop.headers["Cache-Control"], hop


def test_no_page_carries_inline_script_event_handlers_or_javascript_urls(crawl):
    pages = crawl.html()
    assert len(pages) > 30
    for hop in pages:
        for attributes, content in re.findall(r"<script\b([^>]*)>(.*?)</script>", hop.text, re.S | re.I):
            assert 'src="/static/' in attributes and not content.strip(), hop
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", hop.text, re.I), hop
        assert "javascript:" not in hop.text.lower(), hop
        assert "<iframe" not in hop.text.lower() and "<object" not in hop.text.lower(), hop


def test_images_are_served_as_jpeg_under_nosniff_without_a_file_name(crawl):
    for hop in crawl.images():
        assert hop.headers["Content-Type"] == "image/jpeg", hop
        assert hop.headers["X-Content-Type-Options"] == "nosniff", hop
        assert "Content-Disposition" not in hop.headers, hop
        assert hop.body[:3] == b"\xff\xd8\xff", hop


def test_the_participant_cookie_is_signed_httponly_samesite_and_scoped_to_its_study():
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1))
    client = Client()
    consent(client, study)
    morsel = client.cookies[f"participant_{study.code.hex}"]
    assert morsel["httponly"] and morsel["samesite"] == "Lax"
    assert morsel["path"] == f"/s/{study.code}/"
    assert ":" in morsel.value  # value:signature; the bare participant code would be forgeable
    assert not morsel["secure"]  # plain HTTP in tests; see the HTTPS test below
    # The nonce consent tokens are signed with: unreadable to scripts, sent only to participant pages.
    nonce = client.cookies["studyapp_browser"]
    assert nonce["httponly"] and nonce["samesite"] == "Lax" and nonce["path"] == "/s/" and len(nonce.value) >= 32


def test_behind_https_the_participant_and_csrf_cookies_are_secure(settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    study = make_study(dataset=make_dataset(n_classes=2, test_per_class=1))
    client = Client()
    consent(client, study)
    assert client.cookies[f"participant_{study.code.hex}"]["secure"]
    assert client.cookies["studyapp_browser"]["secure"]
    assert client.cookies["csrftoken"]["secure"]

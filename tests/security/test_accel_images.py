"""Images behind a proxy (IMAGES_ACCEL_REDIRECT): the app checks who asks, the proxy sends the file; the browser
still sees only the opaque URL, never the stored file's name (docs/deploy.md)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from studyapp.models import Assignment, ShotExample
from studyapp.pages import EXAMPLE_IMAGE, TRIAL_IMAGE
from tests.factories import make_dataset, make_study
from tests.faults.flow import first_trial
from tests.participant_client import ParticipantBrowser
from tests.processes import free_port, wait_for_port
from tests.studyapp.helpers import answer, start

PREFIX = "/_protected_images/"
CADDYFILE = Path(__file__).resolve().parents[2] / "deploy" / "caddy" / "Caddyfile"


def small_study():
    return make_study(dataset=make_dataset(n_classes=3, train_per_class=2, test_per_class=3), items_per_participant=1)


@pytest.mark.django_db
def test_with_a_proxy_the_image_views_name_the_file_to_the_proxy_only_after_the_owner_check(settings):
    settings.IMAGES_ACCEL_REDIRECT = PREFIX
    study = small_study()
    client = Client()
    page = start(client, study)
    while "Part 3 of 3" not in page.content.decode():
        page = answer(client, page)
    html = page.content.decode()
    trial = Assignment.objects.get(code=page.request["PATH_INFO"].rsplit("/", 1)[1])
    image = client.get(TRIAL_IMAGE.search(html)[1])
    assert image.status_code == 200 and image.content == b""
    assert image["X-Accel-Redirect"] == PREFIX + trial.item.image
    assert image["Content-Type"] == "image/jpeg" and image["Cache-Control"] == "private, max-age=3600"
    example_url = EXAMPLE_IMAGE.findall(html)[0]
    example = client.get(example_url)
    shot = ShotExample.objects.select_related("item").get(code=example_url.rsplit("/", 1)[1])
    assert example["X-Accel-Redirect"] == PREFIX + shot.item.image
    assert example["Cache-Control"] == "private, max-age=86400"
    # Anyone else: the same 404 as for a code that does not exist, and no file named.
    for url in (TRIAL_IMAGE.search(html)[1], example_url):
        stranger = Client().get(url)
        assert stranger.status_code == 404 and "X-Accel-Redirect" not in stranger


def caddyfile_for(*, site_port: int, app_port: int, media_root: Path) -> str:
    """deploy/caddy/Caddyfile as shipped, on plain HTTP on loopback, without the admin endpoint."""
    text = CADDYFILE.read_text()
    for old, new in (("study.example.org", f"http://127.0.0.1:{site_port}"), ("127.0.0.1:8000", f"127.0.0.1:{app_port}"),
                     ("/srv/humanclip/var/media", str(media_root))):
        assert old in text, old
        text = text.replace(old, new)
    return "{\n\tadmin off\n}\n" + text


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_through_the_shipped_caddyfile_participants_get_the_image_bytes_and_never_the_file_name(gunicorn_server,
                                                                                                 tmp_path):
    study = small_study()
    server = gunicorn_server(IMAGES_ACCEL_REDIRECT=PREFIX)
    port = free_port()
    config = tmp_path / "Caddyfile"
    # Missing Caddy fails like missing Chromium: `./run` installs both, so a skip would only hide a broken set-up.
    assert shutil.which("caddy"), "Caddy is not installed: `./run test` installs it (apt-get install caddy)"
    config.write_text(caddyfile_for(site_port=port, app_port=server.port, media_root=Path(settings.MEDIA_ROOT)))
    caddy = subprocess.Popen(["caddy", "run", "--config", str(config), "--adapter", "caddyfile"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
                                  "XDG_CONFIG_HOME": str(tmp_path)})
    try:
        wait_for_port(port)
        browser = ParticipantBrowser(base_url=f"http://127.0.0.1:{port}")
        page = first_trial(browser, str(study.code), external_id="caddy-1")
        url = TRIAL_IMAGE.search(page.html)[1]
        trial = Assignment.objects.select_related("item").get(code=url.split("/t/")[1].split("/")[0])
        with browser._opener.open(browser.base + url) as response:
            body, headers = response.read(), dict(response.headers.items())
        assert body == (Path(settings.MEDIA_ROOT) / trial.item.image).read_bytes()
        assert headers["Content-Type"] == "image/jpeg" and headers["Cache-Control"] == "private, max-age=3600"
        assert headers["X-Content-Type-Options"] == "nosniff" and "Content-Security-Policy" in headers
        assert "X-Accel-Redirect" not in headers and "Content-Disposition" not in headers
        assert not any(trial.item.content_hash[:12] in value for value in headers.values())
        stranger = ParticipantBrowser(base_url=browser.base)
        assert stranger.get(url).status == 404
        # The internal prefix is no way in: from outside it is an ordinary path of the app, which has none.
        assert stranger.get(PREFIX + trial.item.image).status == 404
    finally:
        caddy.terminate()
        caddy.wait(timeout=10)

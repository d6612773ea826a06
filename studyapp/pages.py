"""The shapes a client finds in participant pages: form fields, image and trial URLs.

For everything that plays a participant over HTTP (simulated participants, the load benchmark,
tests). Plain regular expressions, no Django, so the benchmark can import them before setting it up.
"""

import re

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
ENROL = re.compile(r'name="enrol" value="([^"]+)"')
CHOICE = re.compile(r'name="choice" value="([^"]+)"')
TRIAL_IMAGE = re.compile(r'src="(/s/[0-9a-f-]{36}/t/[0-9a-f-]{36}/image)"')
EXAMPLE_IMAGE = re.compile(r'src="(/s/[0-9a-f-]{36}/examples/[0-9a-f-]{36})"')
TRIAL_PATH = re.compile(r"^/s/[0-9a-f-]{36}/t/([0-9a-f-]{36})$")
NEXT_IMAGE = re.compile(r'data-next-image="(/s/[0-9a-f-]{36}/t/[0-9a-f-]{36}/image)"')  # prefetched by trial.js
STATIC = re.compile(r'<(?:link rel="stylesheet" href|script src)="(/static/[^"]+)"')  # what the page loads

#!/usr/bin/env bash
# manage.py as the services run it: as the humanclip user, with /etc/humanclip/humanclip.env and the
# app's .venv. Run it with sudo, e.g.  sudo /srv/humanclip/app/deploy/manage.sh migrate
set -euo pipefail
APP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENV_FILE=${HUMANCLIP_ENV:-/etc/humanclip/humanclip.env}
set -a
# shellcheck source=/dev/null
. "$ENV_FILE"
set +a
cd "$APP"
if [ "$(id -un)" = humanclip ]; then exec "$APP/.venv/bin/python" manage.py "$@"; fi
exec runuser -u humanclip -- "$APP/.venv/bin/python" manage.py "$@"

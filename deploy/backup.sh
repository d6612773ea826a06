#!/usr/bin/env bash
# One backup of what a study cannot be rebuilt without: the database (every answer, study, run and
# prediction) and the media (the item images, named by their sha256, so they never change once written).
# Run by humanclip-backup.service (daily, with /etc/humanclip/humanclip.env); by hand:
# sudo systemctl start humanclip-backup.service. Restoring: docs/deploy.md.
set -euo pipefail
: "${BACKUP_DIR:?set BACKUP_DIR}" "${DATABASE_URL:?set DATABASE_URL}" "${MEDIA_ROOT:?set MEDIA_ROOT}"
KEEP_DAYS=${BACKUP_KEEP_DAYS:-30}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$BACKUP_DIR/db" "$BACKUP_DIR/media"

case "$DATABASE_URL" in
  postgres://*|postgresql://*)
    # Custom format, one consistent snapshot; pg_restore recreates the tables, loads the rows, then the
    # triggers (so the frozen-study triggers never refuse the restore).
    pg_dump --format=custom --no-owner --file="$BACKUP_DIR/db/humanclip-$stamp.dump.partial" --dbname="$DATABASE_URL"
    mv "$BACKUP_DIR/db/humanclip-$stamp.dump.partial" "$BACKUP_DIR/db/humanclip-$stamp.dump"
    ;;
  sqlite://*)
    # SQLite's online backup: consistent while the site writes (WAL).
    sqlite3 "${DATABASE_URL#sqlite://}" ".backup '$BACKUP_DIR/db/humanclip-$stamp.sqlite3'"
    ;;
  *) echo "backup.sh: unknown DATABASE_URL scheme" >&2; exit 1 ;;
esac

# Images are content-addressed and never rewritten: copying what is new is a complete backup. No
# --delete, so an image removed by mistake stays in the backup.
rsync -a "$MEDIA_ROOT/" "$BACKUP_DIR/media/"

find "$BACKUP_DIR/db" -type f -name 'humanclip-*' -mtime +"$KEEP_DAYS" -delete
echo "backup $stamp: $(du -sh "$BACKUP_DIR/db/humanclip-$stamp".* | cut -f1) database, media in $BACKUP_DIR/media"

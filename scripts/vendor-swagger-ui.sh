#!/usr/bin/env bash
# Vendor the Swagger UI static files from the npm package `swagger-ui-dist`
# into static/swagger/, so the /swagger/ page never loads anything from
# another host.
#
# Usage: scripts/vendor-swagger-ui.sh [VERSION]
#
#   VERSION  any npm version spec for swagger-ui-dist (default: "5", i.e. the
#            newest 5.x release). The exact version that was resolved is
#            written to static/swagger/VERSION.
#
# Only the files the page needs are copied (no source maps, no ES bundles,
# no upstream index.html / initializer). Our own static/swagger/index.html
# and static/swagger/swagger-initializer.js are never touched.
#
# Needs: npm (it talks only to the npm registry), tar.
set -euo pipefail

SPEC="${1:-5}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/static/swagger"

# Files taken from the package. Required ones must exist in the tarball.
REQUIRED_FILES=(
  swagger-ui.css
  swagger-ui-bundle.js
  favicon-32x32.png
  favicon-16x16.png
  LICENSE
)
# Copied when present: NOTICE, and the third-party license notices of the
# code bundled into swagger-ui-bundle.js (its first line points to this file).
OPTIONAL_FILES=(
  NOTICE
  swagger-ui-bundle.js.LICENSE.txt
)
# Files we own in DEST; the script must never overwrite them.
OWN_FILES=(index.html swagger-initializer.js)

command -v npm >/dev/null 2>&1 || { echo "error: npm is required" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "Fetching swagger-ui-dist@$SPEC ..."
if ! (cd "$TMP" && npm pack --loglevel=error --ignore-scripts "swagger-ui-dist@$SPEC" >pack.out); then
  echo "error: npm pack swagger-ui-dist@$SPEC failed" >&2
  exit 1
fi
TARBALL="$TMP/$(tail -n 1 "$TMP/pack.out")"
[ -f "$TARBALL" ] || { echo "error: npm pack produced no tarball" >&2; exit 1; }

tar -xzf "$TARBALL" -C "$TMP"
PKG="$TMP/package"

# Exact version from the package's own manifest (no JSON tool needed).
VERSION="$(sed -n 's/^[[:space:]]*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' \
  "$PKG/package.json" | head -n 1)"
[ -n "$VERSION" ] || { echo "error: cannot read version from package.json" >&2; exit 1; }
case "$VERSION" in
  5.*) ;;
  *) echo "warning: swagger-ui-dist $VERSION is not 5.x; index.html and" \
          "swagger-initializer.js were written for 5.x" >&2 ;;
esac

for f in "${REQUIRED_FILES[@]}"; do
  [ -f "$PKG/$f" ] || { echo "error: $f missing from swagger-ui-dist@$VERSION" >&2; exit 1; }
done

mkdir -p "$DEST"

# Drop files vendored by an earlier run (and any stray source maps), but
# keep our own files.
for f in "${REQUIRED_FILES[@]}" "${OPTIONAL_FILES[@]}" \
         swagger-ui-standalone-preset.js VERSION; do
  rm -f "$DEST/$f"
done
find "$DEST" -maxdepth 1 -type f -name '*.map' -delete

for f in "${REQUIRED_FILES[@]}" "${OPTIONAL_FILES[@]}"; do
  if [ -f "$PKG/$f" ]; then
    for own in "${OWN_FILES[@]}"; do
      [ "$f" != "$own" ] || { echo "error: refusing to overwrite $own" >&2; exit 1; }
    done
    install -m 0644 "$PKG/$f" "$DEST/$f"
  fi
done

printf '%s\n' "$VERSION" >"$DEST/VERSION"

for own in "${OWN_FILES[@]}"; do
  [ -f "$DEST/$own" ] || echo "warning: $DEST/$own is missing (it is ours, not vendored)" >&2
done

echo "Vendored swagger-ui-dist $VERSION into static/swagger/:"
(cd "$DEST" && ls -l)

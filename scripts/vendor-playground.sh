#!/usr/bin/env bash
# Bundle the playground's code editor (CodeMirror 6, from npm) into one file,
# static/playground/editor.js, so the /playground/ page loads nothing from another host and
# the service needs no npm at run time. The bundle is committed, like Swagger UI's files.
#
# Usage: scripts/vendor-playground.sh
#
# The versions are pinned in scripts/playground-editor/package.json and, with every
# dependency's, in its package-lock.json (`npm ci` installs exactly those); the entry point
# is scripts/playground-editor/editor.js. To move to newer versions, edit package.json, run
# `npm install --package-lock-only` in that folder, then this script.
#
# Writes static/playground/editor.js and editor.js.LICENSE.txt (the license of every package
# in the bundle). The page's own files (index.html, playground.js, playground.css) are never
# touched.
#
# Needs: node and npm (it talks only to the npm registry).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SOURCE="$ROOT/scripts/playground-editor"
DEST="$ROOT/static/playground"

command -v npm >/dev/null 2>&1 || { echo "error: npm is required" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cp "$SOURCE/package.json" "$SOURCE/package-lock.json" "$SOURCE/editor.js" "$TMP/"

echo "Installing the pinned packages (npm ci) ..."
# No install scripts: esbuild's binary comes as its platform package, an optional dependency.
(cd "$TMP" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

echo "Bundling ..."
(cd "$TMP" && node_modules/.bin/esbuild editor.js --bundle --minify --format=iife \
  --global-name=PlaygroundEditor --target=es2020 --legal-comments=eof \
  --outfile=bundle.js --log-level=warning)

mkdir -p "$DEST"
install -m 0644 "$TMP/bundle.js" "$DEST/editor.js"

# The licenses of what went into the bundle: every installed package but esbuild's own.
{
  echo "static/playground/editor.js bundles these npm packages (scripts/vendor-playground.sh)."
  (cd "$TMP/node_modules" && find . -mindepth 2 -maxdepth 3 -name package.json -printf '%h\n') |
    sed 's|^\./||' | grep -v -e '^esbuild$' -e '^@esbuild/' | sort |
    while read -r pkg; do
      dir="$TMP/node_modules/$pkg"
      version="$(sed -n 's/^[[:space:]]*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' \
        "$dir/package.json" | head -n 1)"
      license_file="$(find "$dir" -maxdepth 1 -iname 'LICENSE*' | head -n 1)"
      printf '\n==== %s@%s ====\n\n' "$pkg" "$version"
      if [ -n "$license_file" ]; then cat "$license_file"; else echo "(no license file)"; fi
    done
} >"$DEST/editor.js.LICENSE.txt"

echo "Bundled the playground editor into static/playground/:"
(cd "$DEST" && ls -l editor.js editor.js.LICENSE.txt)

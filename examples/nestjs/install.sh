#!/bin/sh
# Installs the NestJS example apps' dependencies (package.json + package-lock.json next
# to this script) into <repo>/.build/nestjs/node_modules, where nest.js loads them from.
# `npm ci` from the lockfile (`npm install` if there is none). A stamp file holding the
# checksum of package.json + package-lock.json makes a repeated run a silent no-op.
# Exit status: 0 installed or already up to date, non-zero on failure.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dest="$root/.build/nestjs"
stamp="$dest/.installed"

checksum() {
    cat "$here/package.json" "$here/package-lock.json" 2>/dev/null | sha256sum | cut -d' ' -f1
}

up_to_date() {
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
        [ -f "$dest/node_modules/@nestjs/microservices/package.json" ] &&
        [ -f "$dest/node_modules/kafkajs/package.json" ]
}

want=$(checksum)
up_to_date && exit 0

for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install.sh: $tool not found (needs Node.js >= 20 and npm)" >&2; exit 1; }
done

mkdir -p "$dest"
# one installer at a time (parallel test runs); re-check once we hold the lock
if command -v flock >/dev/null 2>&1; then
    exec 9>"$dest/.lock"
    flock 9
    up_to_date && exit 0
fi

echo "install.sh: installing the NestJS example dependencies into $dest" >&2
rm -f "$stamp"
cp "$here/package.json" "$dest/package.json"
if [ -f "$here/package-lock.json" ]; then
    cp "$here/package-lock.json" "$dest/package-lock.json"
    (cd "$dest" && npm ci --no-audit --no-fund --loglevel=error) >&2
else
    rm -f "$dest/package-lock.json"
    (cd "$dest" && npm install --no-audit --no-fund --loglevel=error) >&2
fi
echo "$want" > "$stamp"

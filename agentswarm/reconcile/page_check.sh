#!/bin/sh
# The reconciler's page check. Runs inside a check sandbox (no network), in the checkout, after the
# build: serves dist/ on the sandbox's own loopback, loads it in headless Chromium twice (the DOM,
# then an 800x600 screenshot) and passes only when <body data-status="ok"> and the page's console
# stayed silent (any level: the game logs nothing unless something is wrong).
#
# usage: page_check.sh <screenshot.png> [<seconds per browser run>]
# exit 0: the page works and the screenshot is at <screenshot.png>; 1: it does not, the reasons
# are printed; 127: this machine has no Chromium.

png=${1:?usage: page_check.sh <screenshot.png> [<seconds per browser run>]}
limit=${2:-60}

browser=$(command -v chromium || command -v chromium-browser) || {
  echo "page check: chromium is not installed (Debian: apt-get install chromium)" >&2
  exit 127
}
rm -f "$png"
if [ ! -f dist/index.html ]; then
  echo "page check: the build produced no dist/index.html" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/page-check.XXXXXX") || exit 1
server=
stop() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null
    wait "$server" 2>/dev/null
  fi
  rm -rf "$work"
}
trap stop EXIT
trap 'exit 1' HUP INT TERM

fail() {
  echo "page check: $*" >&2
  exit 1
}

# Our own server, not the project's: -I keeps the checkout off its module path; port 0 lets the
# kernel choose, and the server prints the port once it listens.
python3 -I -u -m http.server 0 --bind 127.0.0.1 --directory dist >"$work/server.log" 2>&1 &
server=$!
port=
waited=0
while [ -z "$port" ]; do
  kill -0 "$server" 2>/dev/null || fail "the server of dist/ stopped: $(cat "$work/server.log")"
  [ "$waited" -lt 100 ] || fail "the server of dist/ did not start within 10 s"
  sleep 0.1
  waited=$((waited + 1))
  port=$(sed -n 's/^Serving HTTP on .* port \([0-9][0-9]*\) .*/\1/p' "$work/server.log")
done
url="http://127.0.0.1:$port/"

# browse <name> <flags...>: one headless load of the page; output in $work/<name>.out and .err.
# Chromium binds its singleton socket under $TMPDIR, and a socket's path must fit in 108 bytes:
# a sandbox's TMPDIR can be longer, so Chromium runs in $work with TMPDIR=. (a short relative path).
browse() {
  name=$1
  shift
  (cd "$work" && TMPDIR=. timeout -k 5 "$limit" "$browser" --headless --no-sandbox --disable-gpu \
    --use-angle=swiftshader --enable-unsafe-swiftshader --disable-dev-shm-usage \
    --user-data-dir="$work/profile-$name" --no-first-run --no-default-browser-check \
    --disable-background-networking --disable-component-update --disable-sync --disable-quic \
    --window-size=800,600 --virtual-time-budget=5000 --enable-logging=stderr --v=0 \
    "$@" "$url" >"$work/$name.out" 2>"$work/$name.err")
  code=$?
  [ "$code" -ne 124 ] || fail "chromium did not finish loading the page within $limit s ($1)"
  [ "$code" -eq 0 ] || fail "chromium failed ($1, exit $code): $(grep -v -i dbus "$work/$name.err" | tail -n 20)"
}

# The page's console lines, whatever their level (Chromium logs every level as INFO:CONSOLE), without
# Chrome's own: its notes on the screenshot's GPU readback and what its internal pages log.
console_errors() {
  grep -h -e ':CONSOLE' -e 'Uncaught' "$@" |
    grep -v -e 'GL Driver Message (OpenGL, Performance' -e 'source: chrome://' -e 'source: chrome-extension://' |
    sed 's/^\[[^]]*\] *//' | head -n 20
}

browse dom --dump-dom
body=$(sed -n 's/.*\(<body[^>]*>\).*/\1/p' "$work/dom.out" | head -n 1 | cut -c 1-500)
status=$(printf '%s\n' "$body" | sed -n 's/.*[[:space:]]data-status="\([^"]*\)".*/\1/p')
message=$(sed -n 's/.*<div id="message"[^>]*>\([^<][^<]*\)<\/div>.*/\1/p' "$work/dom.out" | head -n 1)
errors=$(console_errors "$work/dom.err")
if [ "$status" != ok ] || [ -n "$errors" ]; then
  echo "page check: expected <body data-status=\"ok\"> and a silent console, got ${body:-no <body>}" >&2
  [ -z "$message" ] || echo "the page's message: $message" >&2
  [ -z "$errors" ] || printf 'console errors:\n%s\n' "$errors" >&2
  exit 1
fi

browse shot --screenshot="$work/page.png"
errors=$(console_errors "$work/shot.err")
[ -z "$errors" ] || fail "$(printf 'console errors while taking the screenshot:\n%s' "$errors")"
[ -s "$work/page.png" ] || fail "chromium made no screenshot"
cp "$work/page.png" "$png" || fail "cannot write the screenshot to $png"
echo "page check: $body, a silent console, screenshot in $png"

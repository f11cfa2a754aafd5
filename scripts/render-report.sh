#!/bin/sh
# Renders an HTML audit report to a PNG with headless Chromium and checks
# that the page is self-contained and that the picture is not blank or
# broken.
#
#   scripts/render-report.sh [--height PX] REPORT.html OUT.png
#
# Fails (exit 1, with the reason) when the HTML refers to anything outside
# itself (a script, an http(s) or protocol-relative src/href, @import,
# url() other than a reference inside the page), when Chromium fails or
# writes no PNG, or when the PNG is not a readable 8-bit RGB(A) image with
# at least 2 % of its pixels not background white and at least 8 distinct
# colours.  An empty page renders as one colour with no such pixels; a
# report renders with hundreds of colours and 10-20 % ink.  Exit 2: usage.
#
# The window is 1200 pixels wide and --height (default 2400) tall; as root
# Chromium needs --no-sandbox, and a throwaway HOME and profile keep the
# run from touching (or depending on) anyone's settings.
set -eu

usage() {
    echo "usage: scripts/render-report.sh [--height PX] REPORT.html OUT.png" >&2
    exit 2
}

height=2400
while [ $# -gt 0 ]; do
    case "$1" in
    --height)
        [ $# -ge 2 ] || usage
        case "$2" in '' | *[!0-9]*) usage ;; esac
        height=$2
        shift 2
        ;;
    -h | --help) usage ;;
    -*) usage ;;
    *) break ;;
    esac
done
[ $# -eq 2 ] || usage
html=$1
out=$2
[ -f "$html" ] || { echo "render-report: $html: no such file" >&2; exit 2; }

fail() {
    echo "render-report: $*" >&2
    exit 1
}

# ---- self-contained? -------------------------------------------------------
if grep -qi '<script' "$html"; then
    fail "$html: contains a <script> element"
fi
if grep -Eqi '(src|href)[[:space:]]*=[[:space:]]*["'"'"']?[[:space:]]*(https?:|//)' "$html"; then
    fail "$html: refers to an external resource (src/href with http(s) or //)"
fi
if grep -qi '@import' "$html"; then
    fail "$html: contains @import"
fi
# url(#id) points inside the page; anything else would be fetched.
if grep -Eoi 'url\([^)]*\)' "$html" | grep -Eqiv '^url\(["'"'"']?#'; then
    fail "$html: contains url() pointing outside the page"
fi
# Nothing is loaded from a file either: no src= at all, href= only to an
# anchor in the page.
if grep -Eqi '[[:space:]]src[[:space:]]*=' "$html"; then
    fail "$html: contains src= (the report must not load files)"
fi
if grep -Eoi 'href[[:space:]]*=[[:space:]]*["'"'"']?[^"'"'"'[:space:]>]*' "$html" |
    grep -Eqiv '=[[:space:]]*["'"'"']?#'; then
    fail "$html: contains an href= that is not an anchor in the page"
fi

# ---- render ------------------------------------------------------------------
chrome=""
for c in chromium chromium-browser google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then
        chrome=$c
        break
    fi
done
[ -n "$chrome" ] || fail "no chromium found (apt-get install -y --no-install-recommends chromium)"

work=$(mktemp -d "${TMPDIR:-/tmp}/render-report.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
abs_html=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
shot=$work/shot.png

HOME=$work XDG_CONFIG_HOME=$work/config XDG_CACHE_HOME=$work/cache \
    "$chrome" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --no-first-run --no-default-browser-check --hide-scrollbars \
    --user-data-dir="$work/profile" --window-size=1200,"$height" \
    --screenshot="$shot" "file://$abs_html" >"$work/chromium.log" 2>&1 || {
    cat "$work/chromium.log" >&2
    fail "chromium failed on $html"
}
[ -s "$shot" ] || {
    cat "$work/chromium.log" >&2
    fail "chromium wrote no screenshot"
}

# ---- check the picture (python3 standard library only) -----------------------
python3 - "$shot" <<'EOF' || fail "$html: the rendering looks blank or broken"
import struct
import sys
import zlib

path = sys.argv[1]
with open(path, "rb") as f:
    data = f.read()
if data[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit("render-report: not a PNG")
pos, idat, ihdr = 8, [], None
while pos + 8 <= len(data):
    length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if ctype == b"IHDR":
        ihdr = struct.unpack(">IIBBBBB", body)
    elif ctype == b"IDAT":
        idat.append(body)
    elif ctype == b"IEND":
        break
    pos += 12 + length
if ihdr is None or not idat:
    sys.exit("render-report: PNG without IHDR or IDAT")
width, height, depth, ctype, _, _, interlace = ihdr
channels = {2: 3, 6: 4}.get(ctype)
if depth != 8 or channels is None or interlace != 0:
    sys.exit("render-report: unexpected PNG format (depth %d, colour type %d, interlace %d)"
             % (depth, ctype, interlace))
raw = zlib.decompress(b"".join(idat))
stride = width * channels
if len(raw) != height * (stride + 1):
    sys.exit("render-report: PNG data has the wrong size")

def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c

prev = bytearray(stride)
ink = 0
colours = set()
for y in range(height):
    ftype = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    if ftype == 1:
        for i in range(channels, stride):
            line[i] = (line[i] + line[i - channels]) & 0xFF
    elif ftype == 2:
        for i in range(stride):
            line[i] = (line[i] + prev[i]) & 0xFF
    elif ftype == 3:
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
    elif ftype == 4:
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            upleft = prev[i - channels] if i >= channels else 0
            line[i] = (line[i] + paeth(left, prev[i], upleft)) & 0xFF
    elif ftype != 0:
        sys.exit("render-report: bad PNG filter %d on row %d" % (ftype, y))
    pixels = list(zip(line[0::channels], line[1::channels], line[2::channels]))
    ink += width - pixels.count((255, 255, 255))
    if len(colours) < 4096:
        colours.update(pixels)
    prev = line
share = ink / float(width * height)
print("render-report: %dx%d, %.1f%% non-white pixels, %s colours"
      % (width, height, 100 * share, "4096+" if len(colours) >= 4096 else len(colours)))
if share < 0.02:
    sys.exit("render-report: only %.2f%% of the pixels are not white" % (100 * share))
if len(colours) < 8:
    sys.exit("render-report: only %d colours" % len(colours))
EOF

mkdir -p "$(dirname "$out")"
cp "$shot" "$out"
echo "render-report: wrote $out"

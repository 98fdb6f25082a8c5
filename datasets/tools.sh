# Shared by datasets/*/make_*.sh (sourced): the tools every build needs, and a scratch directory
# removed on exit ($TMP, with pkg/ for downloads and x/ for extracted files).
require_tools() { # script-name python
    for tool in ffmpeg ffprobe "$2"; do
        command -v "$tool" >/dev/null 2>&1 || {
            echo "$1: '$tool' not found (apt-get install -y ffmpeg python3-pip)" >&2
            exit 1
        }
    done
    ffmpeg -hide_banner -buildconf | grep -q -- --enable-libsoxr || {
        echo "$1: this ffmpeg lacks libsoxr (needed for aresample=resampler=soxr)" >&2
        exit 1
    }
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    mkdir -p "$TMP/pkg" "$TMP/x"
}

#!/usr/bin/env bash
# One Burn CPU feature set: every binary package gets burn-flex with the features the benches
# measure (`simd` and `rayon` among them), so a benchmark figure is what users run. Fails when
# one package resolves burn-flex differently from the benches or without those two.
set -euo pipefail
cd "$(dirname "$0")/.."
features() {
  cargo tree --locked -p "$1" -e features -i burn-flex --prefix none 2>/dev/null \
    | sed -n 's/^burn-flex feature "\([a-z0-9_-]*\)".*/\1/p' | sort -u | tr '\n' ' '
}
want="$(features silencio-benches)"
echo "silencio-benches: burn-flex [ $want]"
for f in simd rayon; do
  case " $want" in *" $f "*) ;; *) echo "burn-flex lacks $f in the benches" >&2; exit 1 ;; esac
done
status=0
for p in silencio trainer silencio-server silencio-watch; do
  got="$(features "$p")"
  echo "$p: burn-flex [ $got]"
  [ "$got" = "$want" ] || { echo "$p resolves burn-flex with other features than the benches" >&2; status=1; }
done
exit $status

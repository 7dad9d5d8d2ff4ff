#!/usr/bin/env bash
# Sizes of a spoolmon binary as built, without debug sections, and stripped (as the packages
# ship it), in bytes, plus its largest sections:
#   contrib/bench/binary-size.sh [BINARY]     (default target/release/spoolmon)
set -euo pipefail
bin=${1:-target/release/spoolmon}
work=$(mktemp)
trap 'rm -f "$work"' EXIT
cp "$bin" "$work"
full=$(stat -c %s "$bin")
strip --strip-debug "$work"
nodebug=$(stat -c %s "$work")
strip --strip-unneeded --remove-section=.comment "$work"
stripped=$(stat -c %s "$work")
echo "$bin: built $full, without debug sections $nodebug, stripped $stripped bytes"
size -A "$bin" | sort -k2 -n | tail -6

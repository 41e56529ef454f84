#!/usr/bin/env bash
# Regenerates wire/src/generated/ from wire/schema/*.fbs with flatc 25.12 (built from
# source by the flatc-fork crate in tools/flatc; needs cmake and a C++ compiler).
# `wire/codegen.sh --check` regenerates into a scratch directory and fails if the
# committed code differs, which is how CI keeps the two in step.
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
[ "${1:-}" = "--check" ] && check=true

target="${FLATC_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/flatc}"
CARGO_TARGET_DIR="$target" cargo build --quiet --locked --manifest-path tools/flatc/Cargo.toml
flatc="$target/debug/metronome-flatc"

out=wire/src/generated
$check && out=$(mktemp -d)
mkdir -p "$out"
# One schema file, one generated module.
"$flatc" --rust -o "$out" wire/schema/metronome.fbs

if $check; then
    if ! diff -ru wire/src/generated "$out"; then
        echo "wire/src/generated/ is stale: run wire/codegen.sh and commit the result" >&2
        exit 1
    fi
    rm -rf "$out"
    echo "wire/src/generated/ is current"
fi

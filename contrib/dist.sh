#!/usr/bin/env bash
# Builds diaryd and diary and writes what an install needs beside them, into
# target/dist/: bin/, man/ (diary.1 and a page per command, diaryd.8,
# diary-protocol.5, diary-file.5) and completions/ (bash, zsh, fish).
# Install as README "Run it as a service" says.
# DIARY_DIST_BINARIES=DIR takes diaryd and diary from DIR instead of a
# release build, and DIARY_DIST_OUT=DIR writes there (the systemd test uses both).
set -euo pipefail
cd "$(dirname "$0")/.."
binaries=${DIARY_DIST_BINARIES:-}
if [ -z "$binaries" ]; then
    cargo build --release --bin diaryd --bin diary
    binaries=target/release
fi
dist=${DIARY_DIST_OUT:-target/dist}
rm -rf "$dist"
mkdir -p "$dist/bin" "$dist/man" "$dist/completions"
cp "$binaries/diaryd" "$binaries/diary" "$dist/bin/"
"$dist/bin/diary" generate-man "$dist/man"
"$dist/bin/diaryd" --generate-man "$dist/man"
for prog in diary diaryd; do
    if [ "$prog" = diary ]; then gen=("$dist/bin/diary" completions); else gen=("$dist/bin/diaryd" --completions); fi
    "${gen[@]}" bash > "$dist/completions/$prog.bash"
    "${gen[@]}" zsh > "$dist/completions/_$prog"
    "${gen[@]}" fish > "$dist/completions/$prog.fish"
done
echo "wrote $dist: $(ls "$dist/man" | wc -l) manual pages, $(ls "$dist/completions" | wc -l) completion scripts"

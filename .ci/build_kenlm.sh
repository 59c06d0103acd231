#!/usr/bin/env bash
# Build KenLM's estimation/query binaries (lmplz, build_binary, query) from the PyPI kenlm sdist.
#
# Why the sdist: PyPI's kenlm wheel/sdist *installs* only the query-side Python module, but the sdist
# ships the full C++ tree (lm/builder included), so it is the one pinned, reachable source of lmplz
# without cloning GitHub.  Debian bookworm has no kenlm package.
#
# Output, under ${LMPIPE_CACHE:-$HOME/.cache/lmpipe}/kenlm-0.3.0 (outside the checkout, so it survives
# `git clean` and is shared between worktrees):
#   bin/{lmplz,build_binary,query}         the tools
#   lib/libkenlm{,_util}.a, include/        KenLM's static libraries and headers (position-independent)
#   lib/liblmpipe_kenlm-<hash>.so           lmpipe's batch scorer (lm/native/kenlm_lines.cc) linked against
#                                           them; <hash> is the source's, so an edited source builds anew and
#                                           lm/kenlm_native.py never loads a stale library
# Idempotent: KenLM is built only when a tool, library or header is missing; the scorer only when its
# hashed library is missing (a few seconds).
#
# Needs (installed by the caller, .ci/run, not here):
#   cmake g++ make libboost-program-options-dev libboost-system-dev libboost-thread-dev
#   libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev
# Usage: .ci/build_kenlm.sh        (env PYTHON=path/to/python overrides the pip used for the download;
#                                    env JOBS=N overrides the parallel build degree, default 2)
set -euo pipefail

KENLM_VERSION=0.3.0
CACHE="${LMPIPE_CACHE:-$HOME/.cache/lmpipe}"
PREFIX="$CACHE/kenlm-$KENLM_VERSION"
BIN="$PREFIX/bin"
JOBS="${JOBS:-2}"

LIB="$PREFIX/lib"
INCLUDE="$PREFIX/include"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCORER_SRC="$here/lm/native/kenlm_lines.cc"

# lmpipe's scorer: compiled against the installed headers and static libraries (seconds, not minutes).
build_scorer() {
    local hash out
    hash="$(sha256sum "$SCORER_SRC" | cut -c1-16)"
    out="$LIB/liblmpipe_kenlm-$hash.so"
    if [[ -f "$out" ]]; then
        echo "lmpipe KenLM scorer already present: $out"
        return 0
    fi
    echo "=== building lmpipe's KenLM scorer ($out) ==="
    g++ -O3 -std=c++17 -fPIC -shared -DNDEBUG -DKENLM_MAX_ORDER=6 -I"$INCLUDE" "$SCORER_SRC" \
        "$LIB/libkenlm.a" "$LIB/libkenlm_util.a" -lz -lbz2 -llzma -lpthread -o "$out.tmp.$$"
    mv -f "$out.tmp.$$" "$out"
}

if [[ -x "$BIN/lmplz" && -x "$BIN/build_binary" && -x "$BIN/query" && -f "$LIB/libkenlm.a" \
      && -f "$LIB/libkenlm_util.a" && -f "$INCLUDE/lm/model.hh" ]]; then
    echo "kenlm $KENLM_VERSION binaries and libraries already present in $PREFIX"
    build_scorer
    exit 0
fi

for tool in cmake make g++; do
    command -v "$tool" >/dev/null || { echo "build_kenlm: '$tool' not found; apt-get install cmake g++ make" >&2; exit 1; }
done

# Prefer the project venv's pip so the download uses the same index configuration as the install.
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x "$here/.venv/bin/python" ]]; then PYTHON="$here/.venv/bin/python"; else PYTHON="$(command -v python3)"; fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/kenlm-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

echo "=== 1/3 Downloading kenlm==$KENLM_VERSION sdist ==="
# --no-build-isolation: fetching the sdist must not build its build requirements (pip would compile
# cmake from source for 15+ minutes with --no-binary :all:); only the tarball is wanted.
"$PYTHON" -m pip download --quiet --no-deps --no-binary kenlm --no-build-isolation --dest "$work" "kenlm==$KENLM_VERSION"
sdist="$(ls "$work"/kenlm-*.tar.gz | head -n1)"
tar -xzf "$sdist" -C "$work"
src="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kenlm-*' | head -n1)"
[[ -f "$src/lm/builder/lmplz_main.cc" ]] || { echo "build_kenlm: $sdist has no lm/builder sources" >&2; exit 1; }

echo "=== 2/3 Configuring and building (Release, -j$JOBS) ==="
# KENLM_MAX_ORDER matches the PyPI module's default (6) so our ARPAs load in both.
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 \
    -DCOMPILE_TESTS=OFF -DBUILD_TESTING=OFF >"$work/cmake.log" 2>&1 \
    || { cat "$work/cmake.log" >&2; echo "build_kenlm: cmake configure failed (missing Boost/zlib dev packages?)" >&2; exit 1; }
cmake --build "$work/build" --target lmplz build_binary query -- -j"$JOBS" >"$work/make.log" 2>&1 \
    || { tail -n 40 "$work/make.log" >&2; echo "build_kenlm: compilation failed" >&2; exit 1; }

echo "=== 3/3 Installing into $BIN ==="
mkdir -p "$BIN"
for b in lmplz build_binary query; do
    install -m 0755 "$work/build/bin/$b" "$BIN/$b.tmp.$$"
    mv -f "$BIN/$b.tmp.$$" "$BIN/$b"   # rename is atomic: a concurrent reader never sees half a binary
done
# the headers and static libraries lmpipe's scorer links against (built as the tools' dependencies)
mkdir -p "$LIB" "$INCLUDE"
(cd "$src" && find lm util -name '*.hh' -o -name '*.h' | grep -v '/builder/\|/interpolate/\|/filter/' \
    | while read -r header; do install -D -m 0644 "$header" "$INCLUDE/$header"; done)
for a in libkenlm.a libkenlm_util.a; do
    found="$(find "$work/build" -name "$a" | head -n1)"
    [[ -n "$found" ]] || { echo "build_kenlm: $a was not built" >&2; exit 1; }
    install -m 0644 "$found" "$LIB/$a.tmp.$$" && mv -f "$LIB/$a.tmp.$$" "$LIB/$a"
done
echo "kenlm $KENLM_VERSION built in $(( $(date +%s) - start )) s: $PREFIX"
build_scorer

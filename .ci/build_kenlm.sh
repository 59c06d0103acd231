#!/usr/bin/env bash
# Build KenLM's estimation/query binaries (lmplz, build_binary, query) from the PyPI kenlm sdist.
#
# Why the sdist: PyPI's kenlm wheel/sdist *installs* only the query-side Python module, but the sdist
# ships the full C++ tree (lm/builder included), so it is the one pinned, reachable source of lmplz
# without cloning GitHub.  Debian bookworm has no kenlm package.
#
# Output: ${LMPIPE_CACHE:-$HOME/.cache/lmpipe}/kenlm-0.3.0/bin/{lmplz,build_binary,query}
# (outside the checkout, so it survives `git clean` and is shared between worktrees).
# Idempotent: exits at once when the three binaries already exist.
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

if [[ -x "$BIN/lmplz" && -x "$BIN/build_binary" && -x "$BIN/query" ]]; then
    echo "kenlm $KENLM_VERSION binaries already present in $BIN"
    exit 0
fi

for tool in cmake make g++; do
    command -v "$tool" >/dev/null || { echo "build_kenlm: '$tool' not found; apt-get install cmake g++ make" >&2; exit 1; }
done

# Prefer the project venv's pip so the download uses the same index configuration as the install.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
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
echo "kenlm $KENLM_VERSION built in $(( $(date +%s) - start )) s: $BIN"

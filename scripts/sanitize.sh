#!/usr/bin/env bash
# The C fast path under AddressSanitizer and UndefinedBehaviorSanitizer: conntui/_fastpath.c
# built with -fsanitize=address,undefined into a copy of the tree in a temporary directory,
# and the tests that drive it there: the differential tests against the Python path, the
# malformed ring images (truncated blocks, bad offsets and lengths) in
# tests/unit/test_fastpath.py, and the fuzz tests in tests/unit/test_fuzz.py. Any invalid
# read or write, or undefined behaviour, aborts the run (a non-zero exit).
#
# The interpreter is not instrumented, so the ASan runtime is preloaded; PYTHONMALLOC=malloc
# puts every Python buffer (the ring images too) in malloc's memory, where ASan keeps redzones
# around it. Leak checking is off: the interpreter keeps its objects at exit on purpose.
#
#   scripts/sanitize.sh [pytest args]      (PYTHON=... to choose the venv; default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(realpath -s "${PYTHON:-.venv/bin/python}")
out=$(mktemp -d "${TMPDIR:-/tmp}/conntui-sanitize.XXXXXX")
trap 'rm -rf "$out"' EXIT

git ls-files -z conntui tests pyproject.toml | tar --null -T - -cf - | tar -C "$out" -xf -
inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
so=$out/conntui/_fastpath$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
gcc -shared -fPIC -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
  -Wall -Wextra -Wno-missing-field-initializers -I"$inc" conntui/_fastpath.c -o "$so"
nm -D "$so" | grep -q __asan_init || { echo "sanitize: $so is not instrumented" >&2; exit 1; }

export LD_PRELOAD=$(gcc -print-file-name=libasan.so)
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONMALLOC=malloc
cd "$out"
loaded=$("$py" -c 'import conntui._fastpath as m; print(m.__file__)')
[ "$loaded" = "$so" ] || { echo "sanitize: loaded $loaded, not the sanitized build $so" >&2; exit 1; }
echo "sanitize: $so (ASan + UBSan)"
# (the JSON comments read back are parsed in Python only: not worth their minute here)
"$py" -m pytest -q -p no:cacheprovider tests/unit/test_fastpath.py tests/unit/test_fuzz.py \
  --deselect tests/unit/test_fuzz.py::test_hostile_comments_read_back_as_nothing_or_an_attribution "$@"

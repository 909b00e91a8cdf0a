#!/usr/bin/env bash
# run.sh: the yardstick of issue 16: specs written for busted and luassert (assertions, spies,
# stubs, mocks, matchers, extending luassert, busted's language) pass under `sluice test`
# unchanged, and, to prove they are real busted specs, under Debian's busted too (run by
# `sluice lua`, a plain LuaJIT with the system Lua path). Exit 1 if either run fails.
set -u
cd "$(dirname "$0")" || exit 2
BIN=${SLUICE_BIN:-../../build/sluice}
rc=0
out=$("$BIN" test . 2>&1); s=$?
last=$(printf '%s\n' "$out" | tail -n 1)
echo "sluice test tests/spec_compat: $last (exit $s)"
if [ $s != 0 ] || ! printf '%s' "$last" | grep -qE '^[1-9][0-9]* passed, 0 failed'; then
  printf '%s\n' "$out" | grep -v '^ok '; rc=1
fi
if [ -f /usr/bin/busted ]; then
  out=$("$BIN" lua /usr/bin/busted -o plainTerminal . 2>&1); s=$?
  sum=$(printf '%s\n' "$out" | grep -E '^[0-9]+ success' | head -1)
  echo "busted tests/spec_compat: $sum (exit $s)"
  if [ $s != 0 ] || ! printf '%s' "$sum" | grep -q ' / 0 failures / 0 errors / '; then
    printf '%s\n' "$out"; rc=1
  fi
else
  echo "busted tests/spec_compat: skipped (/usr/bin/busted missing: Debian lua-busted)"
fi
exit $rc

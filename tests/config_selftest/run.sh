#!/bin/sh
# run.sh: self-tests of lua/config.lua (schema, defaults, validation) under LuaJIT; exit 1 on failure.
cd "$(dirname "$0")/../.." || exit 1
LUA_PATH="lua/?.lua;;" exec ${SLUICE_LUA:-build/sluice lua} tests/config_selftest/config_test.lua "$@"

/* spectest.h - `kroute test [PATH...]`: finds the *_spec.lua files in and
 * under the folders of the given route files (or folders) and runs busted
 * on them with kroute's Lua library and native module on the paths, so
 * `require "kroute.testing"` works with nothing else set up. */
#ifndef KR_SPECTEST_H
#define KR_SPECTEST_H

/* Replaces the process with busted; returns an exit code only on failure
 * to start it (or 0 when there is no spec to run). */
int kr_spectest_run(const char *const *paths, int cnt, const char *lua_dir);

#endif

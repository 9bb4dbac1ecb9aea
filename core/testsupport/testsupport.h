/* testsupport.h - test-only Lua module `kroute.testsupport`.
 * Busted specs use it to run kroute as a child process (spawn/kill/wait),
 * to produce input and read output topics with librdkafka, and to start an
 * in-process mock Kafka cluster, and to manage topics on a real Kafka cluster.
 * Its sources are core/testsupport/ (module.c builds the table); it is
 * never linked into the kroute binary. */
#ifndef KR_TESTSUPPORT_H
#define KR_TESTSUPPORT_H

#include <lua.h>

/* require("kroute.testsupport"): returns the table of functions. */
int luaopen_kroute_testsupport(lua_State *L);

#endif

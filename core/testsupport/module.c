/* testsupport/module.c - luaopen_kroute_testsupport: builds the table of the
 * test-only module `kroute.testsupport` from the files of this folder, one
 * concern each: call.c (what every call shares), process.c (children, clocks,
 * files), client.c (produce/consume/offsets), admin.c (topics and metadata on
 * a real cluster), mock.c (the in-process mock cluster), bounded.c (bounded
 * string/table libraries). Holds no binding itself. */
#include "testsupport/testsupport.h"

#include "internal.h"

int luaopen_kroute_testsupport(lua_State *L)
{
    kr_ts_call_open(L);
    lua_newtable(L);
    kr_ts_process_open(L);
    kr_ts_client_open(L);
    kr_ts_admin_open(L);
    kr_ts_mock_open(L);
    kr_ts_bounded_open(L);
    return 1;
}

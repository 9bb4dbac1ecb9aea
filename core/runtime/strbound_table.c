/* strbound_table.c - table.move, insert, remove, concat and sort
 * counting the slots they touch (see strbound_internal.h): the stock
 * functions loop in C over a length the handler controls (table.move over
 * 1e15 slots), which no count hook sees. They behave as Lua 5.4's own,
 * metamethods and error texts included; sort wraps the stock sort and
 * counts its comparisons. */
#include <string.h>

#include "runtime/strbound_internal.h"

/* What a table function needs from a non-table argument's metatable,
 * as ltablib's checks. */
enum { TAB_R = 1, TAB_W = 2, TAB_L = 4 };

static int has_meta(lua_State *L, const char *field, int *pushed)
{
    (*pushed)++;
    lua_pushstring(L, field);
    return lua_rawget(L, -*pushed) != LUA_TNIL;
}

static void check_table(lua_State *L, int arg, int what)
{
    if (lua_type(L, arg) == LUA_TTABLE)
        return;
    int pushed = 1; /* the metatable */
    if (lua_getmetatable(L, arg) && (!(what & TAB_R) || has_meta(L, "__index", &pushed)) &&
        (!(what & TAB_W) || has_meta(L, "__newindex", &pushed)) &&
        (!(what & TAB_L) || has_meta(L, "__len", &pushed))) {
        lua_pop(L, pushed);
        return;
    }
    luaL_checktype(L, arg, LUA_TTABLE); /* raises the usual message */
}

/* #t of a table argument, through __len as the table library does. */
static lua_Integer table_len(lua_State *L, int arg, int what)
{
    check_table(L, arg, what | TAB_L);
    return luaL_len(L, arg);
}

/* dst[t .. t+n-1] = src[f .. f+n-1] through lua_geti/lua_seti (so
 * metamethods apply), from the last slot down when `down` (a range moving
 * up inside one table). Every slot is a step: the caller-given range, or a
 * __len, can make n as large as 2^63. */
static void copy_slots(lua_State *L, bound_ctx_t *ctx, int src, lua_Integer f, lua_Integer n,
                       int dst, lua_Integer t, int down)
{
    for (lua_Integer k = 0; k < n; k++) {
        lua_Integer i = down ? n - 1 - k : k;
        lua_geti(L, src, f + i);
        lua_seti(L, dst, t + i);
        spend(ctx, L, 1);
    }
}

/* table.move(a1, f, e, t [, a2]) */
int kr_sb_move(lua_State *L)
{
    bound_ctx_t *ctx = ctx_of(L);
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int dst = !lua_isnoneornil(L, 5) ? 5 : 1;
    check_table(L, 1, TAB_R);
    check_table(L, dst, TAB_W);
    if (e >= f) {
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
        lua_Integer n = e - f + 1;
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
        /* overlapping and moving up inside one table: copy from the end */
        int down = !(t > e || t <= f || (dst != 1 && !lua_compare(L, 1, dst, LUA_OPEQ)));
        copy_slots(L, ctx, 1, f, n, dst, t, down);
    }
    lua_pushvalue(L, dst);
    return 1;
}

/* table.insert(t, [pos,] value) */
int kr_sb_insert(lua_State *L)
{
    bound_ctx_t *ctx = ctx_of(L);
    /* first empty slot; wraps around like luaL_intop */
    lua_Integer e = (lua_Integer)((lua_Unsigned)table_len(L, 1, TAB_R | TAB_W) + 1u);
    lua_Integer pos = e;
    switch (lua_gettop(L)) {
    case 2:
        break;
    case 3:
        pos = luaL_checkinteger(L, 2);
        luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
        if (e > pos) /* t[pos+1 .. e] = t[pos .. e-1] */
            copy_slots(L, ctx, 1, pos, e - pos, 1, pos + 1, 1);
        break;
    default:
        return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_seti(L, 1, pos); /* the value, on top */
    return 0;
}

/* table.remove(t [, pos]) */
int kr_sb_remove(lua_State *L)
{
    bound_ctx_t *ctx = ctx_of(L);
    lua_Integer size = table_len(L, 1, TAB_R | TAB_W);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    if (pos != size) /* Lua 5.4.4 blames argument #1 here */
        luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 1,
                      "position out of bounds");
    lua_geti(L, 1, pos); /* the result */
    if (pos < size) {    /* t[pos .. size-1] = t[pos+1 .. size] */
        copy_slots(L, ctx, 1, pos + 1, size - pos, 1, pos, 0);
        pos = size;
    }
    lua_pushnil(L);
    lua_seti(L, 1, pos);
    return 1;
}

static void concat_add(lua_State *L, luaL_Buffer *b, lua_Integer i)
{
    lua_geti(L, 1, i);
    if (!lua_isstring(L, -1))
        luaL_error(L, "invalid value (%s) at index %I in table for 'concat'",
                   luaL_typename(L, -1), i);
    luaL_addvalue(b);
}

/* table.concat(list [, sep [, i [, j]]]): empty strings from __index make
 * no output, so memory alone does not bound the loop. */
int kr_sb_concat(lua_State *L)
{
    bound_ctx_t *ctx = ctx_of(L);
    lua_Integer last = table_len(L, 1, TAB_R);
    size_t lsep;
    const char *sep = luaL_optlstring(L, 2, "", &lsep);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    last = luaL_optinteger(L, 4, last);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (; i < last; i++) {
        concat_add(L, &b, i);
        luaL_addlstring(&b, sep, lsep);
        spend(ctx, L, 1);
    }
    if (i == last)
        concat_add(L, &b, i);
    luaL_pushresult(&b);
    return 1;
}

/* The comparison handed to the stock sort: counts one step, then runs the
 * user's function (upvalue 2) or '<'. Every step of Lua's quicksort makes a
 * comparison, so this bounds the sort without reimplementing it. */
static int sort_compare(lua_State *L)
{
    spend(ctx_of(L), L, 1);
    lua_settop(L, 2);
    if (lua_isnil(L, lua_upvalueindex(2))) {
        lua_pushboolean(L, lua_compare(L, 1, 2, LUA_OPLT));
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

/* Up to this many elements a plain table sorts at stock speed: its
 * comparisons cannot run long (no metatable, so no __len or __index to
 * fake elements), and the wrapped comparison costs about 3x on numbers. */
#define SORT_UNCHECKED 16384

/* table.sort(list [, comp]) through the stock sort (upvalue 2). Argument
 * errors are raised here so they name table.sort; a list with a __len
 * metamethod has it called twice (here and in the stock sort). */
int kr_sb_sort(lua_State *L)
{
    lua_Integer n = table_len(L, 1, TAB_R | TAB_W);
    if (n <= 1)
        return 0;
    luaL_argcheck(L, n < INT_MAX, 1, "array too big");
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    int plain = lua_type(L, 1) == LUA_TTABLE && !lua_getmetatable(L, 1);
    if (!plain)
        lua_pop(L, 1); /* the metatable */
    /* a Lua comparison runs under the caller's count hook */
    int hooked = lua_isfunction(L, 2) && !lua_iscfunction(L, 2);
    lua_pushvalue(L, lua_upvalueindex(2)); /* stock sort */
    lua_pushvalue(L, 1);
    if (plain && (hooked || n <= SORT_UNCHECKED)) {
        lua_pushvalue(L, 2);
    } else {
        lua_pushvalue(L, lua_upvalueindex(1)); /* ctx */
        lua_pushvalue(L, 2);                   /* comp or nil */
        lua_pushcclosure(L, sort_compare, 2);
    }
    lua_call(L, 2, 0);
    return 0;
}

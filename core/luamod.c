/* luamod.c - `require "kroute.native"`: the real C core as a loadable Lua
 * module, so busted specs test the same config loader, pattern matcher,
 * JSON codec and handler sandbox the kroute binary runs - without Kafka.
 * Exposes: load_config, match, subscription, vm (handler runner), json.
 * `make install` and the Debian package ship it, for `kroute test`; the
 * specs' processes and Kafka client are a module of their own
 * (kroute.testsupport, core/testsupport/), never installed. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "codec/nest.h"
#include "config/config.h"
#include "config/pattern.h"
#include "engine/outcome.h"
#include "runtime/lapi.h"
#include "runtime/message.h"
#include "runtime/record.h"
#include "runtime/vm.h"

#define VM_MT "kroute.native.vm"

typedef struct vm_ud {
    kr_vm_t *vm;
    char *to;       /* default output topic, like a route's `to` */
    int reply_nest; /* like `reply: nest`: the first returned value is the reply */
} vm_ud_t;

static void set_str(lua_State *L, const char *k, const char *v)
{
    if (v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, k);
    }
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static void push_route(lua_State *L, const kr_config_t *cfg, const kr_route_t *r)
{
    static const char *const orderings[] = {"partition", "key", "none"};
    static const char *const kinds[] = {"exact", "glob", "regex"};
    lua_newtable(L);
    set_str(L, "name", r->name);
    set_str(L, "handler", r->handler);
    set_str(L, "to", r->to);
    set_str(L, "group", kr_route_group(cfg, r));
    set_str(L, "ordering", orderings[r->ordering]);
    set_int(L, "attempts", r->attempts);
    set_int(L, "backoff_ms", r->backoff_ms);
    set_int(L, "max_backoff_ms", r->max_backoff_ms);
    if (r->dlq_off) {
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "dlq");
    } else {
        set_str(L, "dlq", r->dlq);
    }
    set_int(L, "timeout_ms", r->timeout_ms);
    set_int(L, "memory", (lua_Integer)r->memory);
    set_int(L, "max_input", (lua_Integer)r->max_input);
    set_str(L, "where", r->where);
    set_str(L, "reply", r->reply_nest ? "nest" : NULL);
    lua_createtable(L, (int)r->request_cnt, 0);
    for (size_t i = 0; i < r->request_cnt; i++) {
        lua_pushstring(L, r->requests[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "requests");
    lua_createtable(L, (int)r->pattern_cnt, 0);
    for (size_t i = 0; i < r->pattern_cnt; i++) {
        lua_createtable(L, 0, 3);
        set_str(L, "text", r->patterns[i].text);
        set_str(L, "kind", kinds[r->patterns[i].kind]);
        set_str(L, "subscription", r->patterns[i].subscription);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "match");
}

static void push_props(lua_State *L, const kr_props_t *props)
{
    lua_createtable(L, 0, (int)props->cnt);
    for (size_t i = 0; i < props->cnt; i++)
        set_str(L, props->v[i].name, props->v[i].value);
}

/* load_config(path [, path...]) -> config | nil, {errors}  [-n, +(1|2), m] */
static int l_load_config(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_argcheck(L, n >= 1, 1, "a route file or folder");
    const char **paths = lua_newuserdatauv(L, (size_t)n * sizeof(char *), 0);
    for (int i = 0; i < n; i++)
        paths[i] = luaL_checkstring(L, i + 1);
    kr_errors_t errs = {0};
    kr_config_t *cfg = kr_config_load(paths, (size_t)n, &errs);
    if (!cfg) {
        lua_pushnil(L);
        lua_createtable(L, (int)errs.cnt, 0);
        for (size_t i = 0; i < errs.cnt; i++) {
            lua_pushstring(L, errs.msgs[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        kr_errors_free(&errs);
        return 2;
    }
    lua_newtable(L);
    set_str(L, "brokers", cfg->brokers);
    set_str(L, "group", cfg->group);
    push_props(L, &cfg->consumer);
    lua_setfield(L, -2, "consumer");
    push_props(L, &cfg->producer);
    lua_setfield(L, -2, "producer");
    lua_createtable(L, (int)cfg->route_cnt, 0);
    for (size_t i = 0; i < cfg->route_cnt; i++) {
        push_route(L, cfg, &cfg->routes[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "routes");
    kr_config_free(cfg);
    return 1;
}

/* match(pattern, topic) -> bool | nil, err ; subscription(pattern) -> string */
static int with_pattern(lua_State *L, int want_match)
{
    kr_pattern_t p;
    char err[512];
    if (kr_pattern_compile(&p, luaL_checkstring(L, 1), err, sizeof(err)) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    if (want_match)
        lua_pushboolean(L, kr_pattern_match(&p, luaL_checkstring(L, 2)));
    else
        lua_pushstring(L, p.subscription);
    kr_pattern_free(&p);
    return 1;
}

static int l_match(lua_State *L) { return with_pattern(L, 1); }
static int l_subscription(lua_State *L) { return with_pattern(L, 0); }

static lua_Integer opt_int_field(lua_State *L, int idx, const char *k, lua_Integer dflt)
{
    lua_getfield(L, idx, k);
    lua_Integer v = luaL_optinteger(L, -1, dflt);
    lua_pop(L, 1);
    return v;
}

static const char *opt_str_field(lua_State *L, int idx, const char *k)
{
    lua_getfield(L, idx, k);
    const char *s = lua_tostring(L, -1); /* anchored by the table */
    lua_pop(L, 1);
    return s;
}

/* vm{handler=, name=, to=, timeout_ms=, memory=, lua_dir=} -> vm | nil, err */
static int l_vm(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    kr_vm_opts_t opts = {.name = opt_str_field(L, 1, "name"),
                         .handler = opt_str_field(L, 1, "handler"),
                         .lua_dir = opt_str_field(L, 1, "lua_dir"),
                         .timeout_ms = opt_int_field(L, 1, "timeout_ms", 5000),
                         .memory = (size_t)opt_int_field(L, 1, "memory", 64 << 20)};
    luaL_argcheck(L, opts.handler != NULL, 1, "handler path required");
    const char *to = opt_str_field(L, 1, "to");
    const char *reply = opt_str_field(L, 1, "reply");
    char err[2048];
    kr_vm_t *vm = kr_vm_new(&opts, err, sizeof(err));
    if (!vm) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    vm_ud_t *ud = lua_newuserdatauv(L, sizeof(*ud), 0);
    ud->vm = vm;
    ud->to = to ? strdup(to) : NULL;
    ud->reply_nest = reply && !strcmp(reply, "nest");
    luaL_setmetatable(L, VM_MT);
    return 1;
}

static vm_ud_t *check_vm(lua_State *L)
{
    vm_ud_t *ud = luaL_checkudata(L, 1, VM_MT);
    luaL_argcheck(L, ud->vm != NULL, 1, "vm is closed");
    return ud;
}

/* headers: {{name, value}, ...} or {name = value | {values}}; a nil or
 * json.null value is a null header value */
static rd_kafka_headers_t *headers_from_lua(lua_State *L, int idx)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    if (n > 0) {
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            size_t len;
            const char *v = lua_tolstring(L, -1, &len);
            rd_kafka_header_add(h, lua_tostring(L, -2), -1, v, v ? (ssize_t)len : 0);
            lua_pop(L, 3);
        }
        return h;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_istable(L, -1)) {
            for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
                lua_rawgeti(L, -1, i);
                size_t len = 0;
                const char *v = lua_tolstring(L, -1, &len);
                rd_kafka_header_add(h, lua_tostring(L, -3), -1, v, (ssize_t)len);
                lua_pop(L, 1);
            }
        } else {
            size_t len = 0;
            const char *v = lua_tolstring(L, -1, &len);
            rd_kafka_header_add(h, lua_tostring(L, -2), -1, v, (ssize_t)len);
        }
        lua_pop(L, 1);
    }
    return h;
}

static void push_headers_list(lua_State *L, rd_kafka_headers_t *h)
{
    lua_newtable(L);
    const char *name;
    const void *val;
    size_t size;
    for (size_t i = 0; h && rd_kafka_header_get_all(h, i, &name, &val, &size) == 0; i++) {
        lua_createtable(L, 2, 0);
        lua_pushstring(L, name);
        lua_rawseti(L, -2, 1);
        if (val) /* a null header value reads as json.null, as handlers see it */
            lua_pushlstring(L, val, size);
        else
            kr_json_push_null(L);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static void push_bytes_field(lua_State *L, const char *k, const void *p, size_t len)
{
    if (!p)
        return;
    lua_pushlstring(L, p, len);
    lua_setfield(L, -2, k);
}

/* A handler waits in kroute.request: record the request in the list at
 * requests_idx and answer it from the scripted replies (the `replies`
 * table of vm:handle's second argument: pattern -> value, or a function
 * of the request value returning value | nil, err). */
static int answer_request(lua_State *L, kr_vm_t *vm, kr_run_t *run, int requests_idx)
{
    const kr_record_t *req = run->request;
    lua_createtable(L, 0, 3);
    set_str(L, "pattern", req->topic);
    if (!req->value_null)
        push_bytes_field(L, "value", req->value.data ? req->value.data : "", req->value.len);
    if (req->key_mode == KR_KEY_SET)
        push_bytes_field(L, "key", req->key.data ? req->key.data : "", req->key.len);
    if (req->partition != RD_KAFKA_PARTITION_UA)
        set_int(L, "partition", req->partition);
    push_headers_list(L, req->headers); /* the caller's own; kroute adds the NestJS three */
    lua_setfield(L, -2, "headers");
    lua_rawseti(L, requests_idx, (lua_Integer)lua_rawlen(L, requests_idx) + 1);

    int top = lua_gettop(L);
    const char *err = NULL;
    if (lua_istable(L, 3) && lua_getfield(L, 3, "replies") == LUA_TTABLE)
        lua_getfield(L, -1, req->topic);
    else
        lua_pushnil(L);
    if (lua_isfunction(L, -1)) {
        if (req->value_null)
            lua_pushnil(L);
        else
            lua_pushlstring(L, req->value.data ? req->value.data : "", req->value.len);
        if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
            err = lua_tostring(L, -1);
            lua_pushnil(L);
        } else if (lua_isnil(L, -2)) {
            err = lua_isnil(L, -1) ? "nil reply" : lua_tostring(L, -1);
            lua_pop(L, 1);
        } else {
            lua_pop(L, 1);
        }
    } else if (lua_isnil(L, -1)) {
        err = lua_pushfstring(L, "no scripted reply for pattern '%s'", req->topic);
    }
    /* the value at -1 is the reply: encode it as a NestJS server would
     * (the value of a {key, value} envelope; an object's own toString) */
    char jerr[256];
    if (!err && kr_nest_is_envelope(L, -1))
        lua_getfield(L, -1, "value");
    if (!err && lua_istable(L, -1) && luaL_getmetafield(L, -1, "__tostring") != LUA_TNIL) {
        lua_pop(L, 1);
        luaL_tolstring(L, -1, NULL);
    }
    int has_value = !err && !lua_isnil(L, -1) && !kr_json_is_null(L, -1);
    if (has_value && lua_type(L, -1) != LUA_TSTRING &&
        kr_json_encode(L, -1, jerr, sizeof(jerr)) < 0) {
        err = lua_pushstring(L, jerr);
        has_value = 0;
    }
    size_t len = 0;
    const char *reply = has_value ? lua_tolstring(L, -1, &len) : NULL;
    int rc = kr_vm_resume(vm, run, reply, len, err);
    lua_settop(L, top);
    return rc;
}

/* vm:handle{topic=, partition=, offset=, key=, value=, timestamp=, headers=}
 *           [, {replies = {pattern = value | function}}]
 * -> {ok=, error=, trace=, records={{topic, partition, key, value, headers}},
 *     requests={{pattern, value, key}}} */
static int l_vm_handle(lua_State *L)
{
    vm_ud_t *ud = check_vm(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 3); /* 3: options, or nil */
    kr_msg_t msg = {0};
    msg.topic = opt_str_field(L, 2, "topic");
    if (!msg.topic)
        msg.topic = "test";
    msg.partition = (int32_t)opt_int_field(L, 2, "partition", 0);
    msg.offset = opt_int_field(L, 2, "offset", 0);
    msg.timestamp = opt_int_field(L, 2, "timestamp", 0);
    lua_getfield(L, 2, "key");
    msg.key = lua_tolstring(L, -1, &msg.key_len);
    lua_getfield(L, 2, "value");
    msg.value = lua_tolstring(L, -1, &msg.value_len);
    lua_getfield(L, 2, "headers");
    rd_kafka_headers_t *hdrs = lua_istable(L, -1) ? headers_from_lua(L, lua_gettop(L)) : NULL;
    msg.headers = hdrs;

    /* whether the dispatcher would take the message for a NestJS request */
    kr_nest_req_t nreq;
    int is_request = kr_nest_parse_request(hdrs, &nreq);
    kr_nest_req_free(&nreq);
    const kr_outcome_route_t oroute = {ud->reply_nest, ud->to};
    kr_run_t run = {.msg = &msg, .nest_reply = kr_outcome_answers(&oroute, is_request)};
    int rc = kr_vm_run(ud->vm, &run);
    lua_newtable(L); /* requests made, in order */
    int requests_idx = lua_gettop(L);
    while (rc == KR_VM_YIELDED)
        rc = answer_request(L, ud->vm, &run, requests_idx);
    kr_outcome_t plan = {.reply_rec = -1};
    if (rc == 0)
        kr_outcome_plan(&run, &oroute, is_request, &plan);
    if (plan.fail) { /* fail the run exactly as the dispatcher does */
        rc = -1;
        run.error = strdup(plan.fail);
        run.trace = strdup("");
        for (size_t i = 0; i < run.cnt; i++)
            kr_record_free(&run.recs[i]);
        run.cnt = 0;
    }
    lua_newtable(L);
    lua_pushboolean(L, rc == 0);
    lua_setfield(L, -2, "ok");
    set_str(L, "error", run.error);
    set_str(L, "trace", run.trace);
    lua_newtable(L);
    const kr_record_t *reply = rc == 0 && plan.reply_rec >= 0 ? &run.recs[plan.reply_rec] : NULL;
    lua_Integer n = 0;
    for (size_t i = 0; i < run.cnt; i++) {
        kr_resolved_t out;
        if (!kr_outcome_is_output(&run, i, &oroute, is_request))
            continue;
        lua_newtable(L);
        if (kr_record_resolve(&run.recs[i], &msg, ud->to, &out) == 0)
            set_str(L, "topic", out.topic);
        if (out.partition != RD_KAFKA_PARTITION_UA)
            set_int(L, "partition", out.partition);
        push_bytes_field(L, "key", out.key, out.key_len);
        push_bytes_field(L, "value", out.value, out.value_len);
        push_headers_list(L, out.headers);
        lua_setfield(L, -2, "headers");
        if (out.headers)
            rd_kafka_headers_destroy(out.headers);
        lua_rawseti(L, -2, ++n);
    }
    lua_setfield(L, -2, "records");
    if (ud->reply_nest) {
        /* what the dispatcher would send a NestJS caller (if is_request) */
        lua_pushboolean(L, is_request);
        lua_setfield(L, -2, "is_request");
        char *corr = kr_nest_header(hdrs, KR_NEST_CORRELATION);
        char *err = rc == 0 ? NULL : kr_nest_error_text(run.error, run.no_handler);
        rd_kafka_headers_t *rh = kr_nest_reply_headers(
            reply && reply->headers ? rd_kafka_headers_copy(reply->headers) : NULL, corr, err,
            !run.no_handler);
        push_headers_list(L, rh);
        lua_setfield(L, -2, "reply_headers");
        rd_kafka_headers_destroy(rh);
        free(err);
        free(corr);
    }
    if (reply && reply->key_mode == KR_KEY_SET)
        push_bytes_field(L, "reply_key", reply->key.data ? reply->key.data : "", reply->key.len);
    if (reply && !reply->value_null)
        push_bytes_field(L, "reply", reply->value.data ? reply->value.data : "",
                         reply->value.len);
    lua_pushvalue(L, requests_idx);
    lua_setfield(L, -2, "requests");
    kr_run_clear(&run);
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    return 1;
}

static int l_vm_memory(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)kr_vm_memory(check_vm(L)->vm));
    return 1;
}

/* vm:export_state() -> JSON text of reload_state() | nil (none) | nil, err:
 * what a hot reload would carry over to the next generation's init(prev) */
static int l_vm_export_state(lua_State *L)
{
    kr_buf_t state = {0};
    char err[512];
    int rc = kr_vm_export_state(check_vm(L)->vm, &state, err, sizeof(err));
    if (rc > 0)
        lua_pushstring(L, state.data);
    else
        lua_pushnil(L);
    kr_buf_free(&state);
    if (rc < 0) {
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

static int l_vm_close(lua_State *L)
{
    vm_ud_t *ud = luaL_checkudata(L, 1, VM_MT);
    kr_vm_free(ud->vm);
    free(ud->to);
    ud->vm = NULL;
    ud->to = NULL;
    return 0;
}

int luaopen_kroute_native(lua_State *L)
{
    static const luaL_Reg vm_methods[] = {
        {"handle", l_vm_handle},
        {"memory", l_vm_memory},
        {"export_state", l_vm_export_state},
        {"close", l_vm_close},
        {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"load_config", l_load_config},
                                     {"match", l_match},
                                     {"subscription", l_subscription},
                                     {"vm", l_vm},
                                     {NULL, NULL}};
    if (luaL_newmetatable(L, VM_MT)) {
        luaL_newlib(L, vm_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_vm_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    luaopen_kroute_json(L);
    lua_setfield(L, -2, "json");
    return 1;
}

/* testsupport.c - the test-only Lua module `kroute.testsupport`.
 * Process control (spawn/kill/wait/sleep/clocks/read_file) so specs can run
 * kroute as a child and SIGKILL it; a small librdkafka client (produce,
 * consume, high_watermarks, committed) to feed and read topics; and
 * mock_cluster(), an in-process librdkafka mock broker for unit-ish specs.
 * See /work/shared/MOCK-BROKER.md for the mock broker's limits. */
#include "testsupport.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "strbound.h"

extern char **environ;

#define KR_TS_RES_MT "kroute.testsupport.res"
#define KR_TS_MOCK_MT "kroute.testsupport.mock"

/* Upper bounds so an unreachable broker fails a spec instead of hanging it. */
#define KR_TS_FLUSH_MS 30000
#define KR_TS_COMMITTED_MS 10000
#define KR_TS_META_MS 10000

/* ------------------------------------------------------------------ clocks */

static int64_t kr_ts_clock_ms(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t kr_ts_mono_ms(void)
{
    return kr_ts_clock_ms(CLOCK_MONOTONIC);
}

/* Sleeps the full duration even when a signal (e.g. SIGCHLD) interrupts. */
static void kr_ts_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec req = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&req, &req) != 0 && errno == EINTR) {
    }
}

static int kr_ts_sleep(lua_State *L)
{
    kr_ts_sleep_ms(luaL_checkinteger(L, 1));
    return 0;
}

static int kr_ts_now(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)kr_ts_clock_ms(CLOCK_REALTIME));
    return 1;
}

static int kr_ts_monotonic(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)kr_ts_mono_ms());
    return 1;
}

/* Operational failures are reported Lua-style as nil, message. */
static int kr_ts_fail(lua_State *L, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int kr_ts_fail(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushnil(L);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return 2;
}

/* ---------------------------------------------------- per-call resources */

/* Everything one call holds (client handle, topic, metadata, a message...)
 * lives in a to-be-closed userdata, so luaL_error or an out-of-memory error
 * raised half-way through can never leak it: Lua closes the slot on error and
 * on return. __gc repeats the release as a backstop; release is idempotent. */
typedef struct kr_ts_res {
    rd_kafka_t *rk;
    int is_consumer;
    rd_kafka_topic_t *rkt;
    const struct rd_kafka_metadata *md;
    rd_kafka_topic_partition_list_t *parts;
    rd_kafka_message_t *msg;
    rd_kafka_headers_t *hdrs; /* headers built but not yet owned by librdkafka */
    int fd;
    /* produce() delivery accounting, written by the dr_msg_cb, which runs on
     * this thread inside rd_kafka_poll/flush. */
    long dr_ok, dr_failed;
    char dr_err[256];
} kr_ts_res_t;

static void kr_ts_res_release(kr_ts_res_t *res)
{
    if (res->msg)
        rd_kafka_message_destroy(res->msg);
    if (res->hdrs)
        rd_kafka_headers_destroy(res->hdrs);
    if (res->md)
        rd_kafka_metadata_destroy(res->md);
    if (res->parts)
        rd_kafka_topic_partition_list_destroy(res->parts);
    if (res->rkt)
        rd_kafka_topic_destroy(res->rkt);
    if (res->rk) {
        /* Assign-only consumers have no group to leave; closing first still
         * stops the fetchers cleanly before the handle goes away. */
        if (res->is_consumer)
            rd_kafka_consumer_close(res->rk);
        rd_kafka_destroy(res->rk);
    }
    if (res->fd >= 0)
        close(res->fd);
    res->msg = NULL;
    res->hdrs = NULL;
    res->md = NULL;
    res->parts = NULL;
    res->rkt = NULL;
    res->rk = NULL;
    res->fd = -1;
}

static int kr_ts_res_gc(lua_State *L)
{
    kr_ts_res_release(luaL_checkudata(L, 1, KR_TS_RES_MT));
    return 0;
}

/* Pushes a fresh resource holder and marks its stack slot to-be-closed.
 * Callers must not move or remove stack slots below it afterwards. */
static kr_ts_res_t *kr_ts_res_new(lua_State *L)
{
    kr_ts_res_t *res = lua_newuserdatauv(L, sizeof(*res), 0);
    memset(res, 0, sizeof(*res));
    res->fd = -1;
    luaL_setmetatable(L, KR_TS_RES_MT);
    lua_toclose(L, -1);
    return res;
}

/* ------------------------------------------------------------- read_file */

static int kr_ts_read_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    kr_ts_res_t *res = kr_ts_res_new(L);
    res->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (res->fd < 0)
        return kr_ts_fail(L, "read_file: %s: %s", path, strerror(errno));
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (;;) {
        char *p = luaL_prepbuffer(&b);
        ssize_t n = read(res->fd, p, LUAL_BUFFERSIZE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return kr_ts_fail(L, "read_file: %s: %s", path, strerror(errno));
        if (n == 0)
            break;
        luaL_addsize(&b, (size_t)n);
    }
    luaL_pushresult(&b);
    return 1;
}

/* ------------------------------------------------------- process control */

/* What a child reports through the exec pipe when it could not exec. */
typedef struct kr_ts_child_err {
    int stage; /* 1 = chdir, 2 = exec */
    int err;
} kr_ts_child_err_t;

/* Reads opts[field] as an optional string; raises on another type. */
static const char *kr_ts_opt_string(lua_State *L, int opts, const char *field)
{
    if (opts == 0)
        return NULL;
    int t = lua_getfield(L, opts, field);
    const char *s = NULL;
    if (t == LUA_TSTRING)
        s = lua_tostring(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "spawn: opts.%s must be a string", field);
    lua_pop(L, 1); /* the string stays alive: opts still references it */
    return s;
}

/* Builds the child's environment: the parent's, with opts.env entries
 * replacing same-named variables (a false value removes the variable).
 * The array and the "NAME=value" strings are Lua-owned (anchored in `keep`),
 * so nothing needs freeing whichever way spawn() exits. */
static char **kr_ts_build_env(lua_State *L, int envt, int keep)
{
    size_t nparent = 0, nextra = 0;
    while (environ && environ[nparent])
        nparent++;
    lua_pushnil(L);
    while (lua_next(L, envt) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "spawn: opts.env keys must be strings");
        int vt = lua_type(L, -1);
        if (vt != LUA_TSTRING && vt != LUA_TNUMBER && vt != LUA_TBOOLEAN)
            luaL_error(L, "spawn: opts.env.%s must be a string, number or false",
                       lua_tostring(L, -2));
        nextra++;
        lua_pop(L, 1);
    }
    char **envp = lua_newuserdatauv(L, (nparent + nextra + 1) * sizeof(char *), 0);
    lua_rawseti(L, keep, (lua_Integer)lua_rawlen(L, keep) + 1);
    size_t n = 0;
    for (size_t i = 0; i < nparent; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t namelen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        lua_pushlstring(L, environ[i], namelen);
        int overridden = lua_rawget(L, envt) != LUA_TNIL;
        lua_pop(L, 1);
        if (!overridden)
            envp[n++] = environ[i];
    }
    lua_pushnil(L);
    while (lua_next(L, envt) != 0) {
        if (lua_type(L, -1) != LUA_TBOOLEAN) {
            const char *name = lua_tostring(L, -2);
            const char *value = luaL_tolstring(L, -1, NULL); /* pushes a copy */
            lua_pushfstring(L, "%s=%s", name, value);
            envp[n++] = (char *)lua_tostring(L, -1);
            lua_rawseti(L, keep, (lua_Integer)lua_rawlen(L, keep) + 1);
            lua_pop(L, 1); /* luaL_tolstring's copy */
        } else if (lua_toboolean(L, -1)) {
            luaL_error(L, "spawn: opts.env.%s: only false (unset) is allowed",
                       lua_tostring(L, -2));
        }
        lua_pop(L, 1);
    }
    envp[n] = NULL;
    return envp;
}

static int kr_ts_open_append(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* Runs in the forked child. Only async-signal-safe calls: the parent has
 * librdkafka threads, so malloc locks may be held by threads that no
 * longer exist in this copy of the process. */
static void kr_ts_child(char **argv, char **envp, const char *cwd, int out_fd, int err_fd,
                        int report_fd)
{
    if (out_fd >= 0)
        dup2(out_fd, STDOUT_FILENO);
    if (err_fd >= 0)
        dup2(err_fd, STDERR_FILENO);
    /* Ignored signals and the blocked mask survive exec; the child must see
     * SIGPIPE/SIGTERM as a freshly started kroute would. */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Don't let the child inherit broker sockets and other descriptors of
     * the test process (it could keep an embedded broker's port alive). */
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    kr_ts_child_err_t rep = {1, 0};
    if (cwd && chdir(cwd) != 0) {
        rep.err = errno;
    } else {
        if (envp)
            execvpe(argv[0], argv, envp);
        else
            execvp(argv[0], argv);
        rep.stage = 2;
        rep.err = errno;
    }
    ssize_t w = write(report_fd, &rep, sizeof(rep));
    (void)w;
    _exit(127);
}

static int kr_ts_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int opts = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        opts = 2;
    }
    lua_Integer argc = luaL_len(L, 1);
    if (argc < 1)
        return luaL_error(L, "spawn: argv needs at least the program");

    /* Anchor for every Lua-owned buffer handed to the child. */
    lua_newtable(L);
    int keep = lua_gettop(L);
    char **argv = lua_newuserdatauv(L, (size_t)(argc + 1) * sizeof(char *), 0);
    lua_rawseti(L, keep, 1);
    for (lua_Integer i = 1; i <= argc; i++) {
        int t = lua_geti(L, 1, i);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            return luaL_error(L, "spawn: argv[%d] must be a string", (int)i);
        /* tostring converts numbers in place; storing the result in `keep`
         * keeps the pointer valid until spawn returns. */
        argv[i - 1] = (char *)lua_tostring(L, -1);
        lua_rawseti(L, keep, (lua_Integer)lua_rawlen(L, keep) + 1);
    }
    argv[argc] = NULL;

    const char *out_path = kr_ts_opt_string(L, opts, "stdout");
    const char *err_path = kr_ts_opt_string(L, opts, "stderr");
    const char *cwd = kr_ts_opt_string(L, opts, "cwd");
    char **envp = NULL;
    if (opts) {
        int t = lua_getfield(L, opts, "env");
        if (t == LUA_TTABLE)
            envp = kr_ts_build_env(L, lua_gettop(L), keep);
        else if (t != LUA_TNIL)
            return luaL_error(L, "spawn: opts.env must be a table");
    }

    /* From here on nothing raises, so plain fds cannot leak. */
    int out_fd = -1, err_fd = -1, pipefd[2] = {-1, -1};
    const char *what = NULL, *what_arg = "";
    if (out_path && (out_fd = kr_ts_open_append(out_path)) < 0)
        what = "cannot open stdout file ", what_arg = out_path;
    else if (err_path && (err_fd = kr_ts_open_append(err_path)) < 0)
        what = "cannot open stderr file ", what_arg = err_path;
    else if (pipe2(pipefd, O_CLOEXEC) != 0)
        what = "pipe2";
    pid_t pid = -1;
    if (!what && (pid = fork()) < 0)
        what = "fork";
    if (pid == 0)
        kr_ts_child(argv, envp, cwd, out_fd, err_fd, pipefd[1]);
    int saved = errno;
    if (out_fd >= 0)
        close(out_fd);
    if (err_fd >= 0)
        close(err_fd);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    if (what) {
        if (pipefd[0] >= 0)
            close(pipefd[0]);
        return kr_ts_fail(L, "spawn: %s%s: %s", what, what_arg, strerror(saved));
    }

    /* The pipe is close-on-exec: EOF means exec succeeded, a report means
     * the child failed and has already _exit(127)ed. */
    kr_ts_child_err_t rep;
    ssize_t n;
    do
        n = read(pipefd[0], &rep, sizeof(rep));
    while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    if (n == (ssize_t)sizeof(rep)) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        if (rep.stage == 1)
            return kr_ts_fail(L, "spawn: chdir %s: %s", cwd, strerror(rep.err));
        return kr_ts_fail(L, "spawn: exec %s: %s", argv[0], strerror(rep.err));
    }
    lua_pushinteger(L, pid);
    return 1;
}

/* pid <= 0 would address a process group or every process we may signal:
 * a bug in a spec must not take busted (or the session) down with it. */
static pid_t kr_ts_check_pid(lua_State *L, int idx)
{
    lua_Integer pid = luaL_checkinteger(L, idx);
    if (pid <= 0 || pid > INT32_MAX)
        luaL_error(L, "invalid pid %d", (int)pid);
    return (pid_t)pid;
}

static const struct {
    const char *name;
    int signo;
} kr_ts_signals[] = {
    {"TERM", SIGTERM}, {"KILL", SIGKILL}, {"INT", SIGINT},   {"HUP", SIGHUP},
    {"QUIT", SIGQUIT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"STOP", SIGSTOP},
    {"CONT", SIGCONT}, {NULL, 0},
};

static int kr_ts_kill(lua_State *L)
{
    pid_t pid = kr_ts_check_pid(L, 1);
    int sig = -1;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, 2);
        if (n < 0 || n >= NSIG)
            return luaL_error(L, "kill: invalid signal number %d", (int)n);
        sig = (int)n;
    } else {
        const char *name = luaL_checkstring(L, 2);
        if (strncmp(name, "SIG", 3) == 0)
            name += 3;
        for (int i = 0; kr_ts_signals[i].name; i++)
            if (strcmp(name, kr_ts_signals[i].name) == 0)
                sig = kr_ts_signals[i].signo;
        if (sig < 0)
            return luaL_error(L, "kill: unknown signal '%s'", name);
    }
    if (kill(pid, sig) != 0)
        return kr_ts_fail(L, "kill %d: %s", (int)pid, strerror(errno));
    lua_pushboolean(L, 1);
    return 1;
}

/* Polls rather than blocking so a timeout needs no SIGALRM tricks. */
static int kr_ts_wait(lua_State *L)
{
    pid_t pid = kr_ts_check_pid(L, 1);
    lua_Integer timeout = luaL_optinteger(L, 2, -1); /* < 0: no bound */
    int64_t deadline = kr_ts_mono_ms() + timeout;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return kr_ts_fail(L, "wait %d: %s", (int)pid, strerror(errno));
        if (r == pid && WIFEXITED(st)) {
            lua_pushliteral(L, "exit");
            lua_pushinteger(L, WEXITSTATUS(st));
            return 2;
        }
        if (r == pid && WIFSIGNALED(st)) {
            lua_pushliteral(L, "signal");
            lua_pushinteger(L, WTERMSIG(st));
            return 2;
        }
        if (timeout >= 0 && kr_ts_mono_ms() >= deadline)
            return kr_ts_fail(L, "timeout");
        kr_ts_sleep_ms(10);
    }
}

/* ------------------------------------------------------------ kafka glue */

/* Creates res->rk. kv is a NULL-terminated list of name, value pairs set on
 * top of the defaults every handle here shares. */
static int kr_ts_connect(kr_ts_res_t *res, rd_kafka_type_t type, const char *brokers,
                         const char *const *kv,
                         void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *),
                         char *err, size_t errsz)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* Errors only: the mock broker and short-lived handles are chatty. */
    if (rd_kafka_conf_set(conf, "log_level", "3", err, errsz) != RD_KAFKA_CONF_OK ||
        (brokers && rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, errsz) !=
                        RD_KAFKA_CONF_OK))
        goto fail;
    for (; kv && kv[0]; kv += 2)
        if (rd_kafka_conf_set(conf, kv[0], kv[1], err, errsz) != RD_KAFKA_CONF_OK)
            goto fail;
    if (dr_cb)
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, res); /* dr_cb's accounting lives in res */
    res->rk = rd_kafka_new(type, conf, err, errsz);
    if (!res->rk)
        goto fail; /* rd_kafka_new only takes conf on success */
    res->is_consumer = type == RD_KAFKA_CONSUMER;
    return 0;
fail:
    rd_kafka_conf_destroy(conf);
    return -1;
}

/* Fills res->parts with every partition of `topic`, sorted by id. A new
 * topic (the Metadata request itself auto-creates it on the mock) may
 * report no leader or no partitions for a moment, so retry until timeout. */
static int kr_ts_load_partitions(kr_ts_res_t *res, const char *topic, int64_t timeout_ms,
                                 char *err, size_t errsz)
{
    int64_t deadline = kr_ts_mono_ms() + timeout_ms;
    res->rkt = rd_kafka_topic_new(res->rk, topic, NULL);
    if (!res->rkt) {
        snprintf(err, errsz, "%s", rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    snprintf(err, errsz, "no partitions");
    for (;;) {
        int64_t left = deadline - kr_ts_mono_ms();
        if (left <= 0)
            return -1;
        rd_kafka_resp_err_t e = rd_kafka_metadata(res->rk, 0, res->rkt, &res->md,
                                                  left > 2000 ? 2000 : (int)left);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(err, errsz, "%s", rd_kafka_err2str(e));
            res->md = NULL;
        } else if (res->md->topic_cnt < 1) {
            snprintf(err, errsz, "topic missing from metadata");
        } else if (res->md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(err, errsz, "%s", rd_kafka_err2str(res->md->topics[0].err));
        } else if (res->md->topics[0].partition_cnt > 0) {
            const rd_kafka_metadata_topic_t *t = &res->md->topics[0];
            res->parts = rd_kafka_topic_partition_list_new(t->partition_cnt);
            for (int i = 0; i < t->partition_cnt; i++)
                rd_kafka_topic_partition_list_add(res->parts, topic, t->partitions[i].id);
            rd_kafka_topic_partition_list_sort(res->parts, NULL, NULL);
            rd_kafka_metadata_destroy(res->md);
            res->md = NULL;
            return 0;
        }
        if (res->md) {
            rd_kafka_metadata_destroy(res->md);
            res->md = NULL;
        }
        kr_ts_sleep_ms(50);
    }
}

/* Optional integer field of a table: 1 = found, 0 = absent, -1 = not an
 * integer (the caller raises, naming the record or option). */
static int kr_ts_int_field(lua_State *L, int t, const char *field, lua_Integer *out)
{
    int type = lua_getfield(L, t, field);
    int ok = 0;
    if (type != LUA_TNIL) {
        *out = lua_tointegerx(L, -1, &ok);
        ok = ok ? 1 : -1;
    }
    lua_pop(L, 1);
    return ok;
}

/* ---------------------------------------------------------------- produce */

static void kr_ts_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    kr_ts_res_t *res = opaque;
    (void)rk;
    if (!m->err) {
        res->dr_ok++;
        return;
    }
    if (res->dr_failed++ == 0)
        snprintf(res->dr_err, sizeof(res->dr_err), "%s [%d]: %s",
                 rd_kafka_topic_name(m->rkt), (int)m->partition,
                 rd_kafka_err2str(m->err));
}

/* Reads records[i].key/.value: nil (null) or a string. */
static void kr_ts_bytes_field(lua_State *L, int rec, const char *field, lua_Integer i,
                              rd_kafka_vtype_t vtype, rd_kafka_vu_t *vus, size_t *nvu)
{
    int t = lua_getfield(L, rec, field); /* left on the stack: MSG_F_COPY is
                                            done before the caller pops it */
    if (t == LUA_TNIL)
        return;
    if (t != LUA_TSTRING)
        luaL_error(L, "produce: records[%d].%s must be a string or nil", (int)i, field);
    size_t len;
    vus[*nvu].vtype = vtype;
    vus[*nvu].u.mem.ptr = (void *)lua_tolstring(L, -1, &len);
    vus[*nvu].u.mem.size = len;
    (*nvu)++;
}

/* Builds res->hdrs from records[i].headers = {{name, value}, ...}. */
static void kr_ts_build_headers(lua_State *L, kr_ts_res_t *res, int rec, lua_Integer i)
{
    int t = lua_getfield(L, rec, "headers");
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (t != LUA_TTABLE)
        luaL_error(L, "produce: records[%d].headers must be an array", (int)i);
    lua_Integer n = luaL_len(L, -1);
    res->hdrs = rd_kafka_headers_new((size_t)n);
    for (lua_Integer h = 1; h <= n; h++) {
        if (lua_geti(L, -1, h) != LUA_TTABLE)
            luaL_error(L, "produce: records[%d].headers[%d] must be {name, value}",
                       (int)i, (int)h);
        /* Types are checked first: lua_tolstring would turn a number into a
         * string in place and hide the mistake. */
        int nt = lua_geti(L, -1, 1), vt = lua_geti(L, -2, 2);
        if (nt != LUA_TSTRING || (vt != LUA_TSTRING && vt != LUA_TNIL))
            luaL_error(L, "produce: records[%d].headers[%d] must be {name, value}",
                       (int)i, (int)h);
        size_t nlen, vlen = 0;
        const char *name = lua_tolstring(L, -2, &nlen);
        const char *val = lua_tolstring(L, -1, &vlen); /* NULL: null header */
        rd_kafka_header_add(res->hdrs, name, (ssize_t)nlen, val,
                            val ? (ssize_t)vlen : -1);
        lua_pop(L, 3);
    }
    lua_pop(L, 1);
}

static int kr_ts_produce(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    const char *topic = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer nrec = luaL_len(L, 3);
    kr_ts_res_t *res = kr_ts_res_new(L);
    char err[512];
    /* linger + 64 KiB batches: fast, yet far below the 1 MiB batch size at
     * which the mock broker may drop data (MOCK-BROKER.md). */
    /* clang-format off */
    static const char *const kv[] = {
        "linger.ms", "5",
        "batch.size", "65536",
        "partitioner", "murmur2_random",
        /* specs feed inputs larger than kroute's producer may send (as a
         * client with a higher limit, or the broker's 1 MiB, would) */
        "message.max.bytes", "4000000",
        NULL};
    /* clang-format on */
    if (kr_ts_connect(res, RD_KAFKA_PRODUCER, brokers, kv, kr_ts_dr_cb, err,
                      sizeof(err)) != 0)
        return kr_ts_fail(L, "produce: %s", err);

    int base = lua_gettop(L);
    for (lua_Integer i = 1; i <= nrec; i++) {
        if (lua_geti(L, 3, i) != LUA_TTABLE)
            return luaL_error(L, "produce: records[%d] must be a table", (int)i);
        int rec = lua_gettop(L);
        rd_kafka_vu_t vus[8];
        size_t nvu = 0;
        memset(vus, 0, sizeof(vus));
        vus[nvu].vtype = RD_KAFKA_VTYPE_TOPIC;
        vus[nvu++].u.cstr = topic;
        vus[nvu].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
        vus[nvu++].u.i = RD_KAFKA_MSG_F_COPY;
        kr_ts_bytes_field(L, rec, "key", i, RD_KAFKA_VTYPE_KEY, vus, &nvu);
        kr_ts_bytes_field(L, rec, "value", i, RD_KAFKA_VTYPE_VALUE, vus, &nvu);
        lua_Integer v;
        int has = kr_ts_int_field(L, rec, "partition", &v);
        if (has < 0 || (has > 0 && (v < -1 || v > INT32_MAX)))
            return luaL_error(L, "produce: records[%d].partition must be an integer",
                              (int)i);
        if (has > 0) {
            vus[nvu].vtype = RD_KAFKA_VTYPE_PARTITION;
            vus[nvu++].u.i32 = (int32_t)v;
        }
        has = kr_ts_int_field(L, rec, "timestamp", &v);
        if (has < 0)
            return luaL_error(L, "produce: records[%d].timestamp must be an integer",
                              (int)i);
        if (has > 0) {
            vus[nvu].vtype = RD_KAFKA_VTYPE_TIMESTAMP;
            vus[nvu++].u.i64 = (int64_t)v;
        }
        kr_ts_build_headers(L, res, rec, i);
        if (res->hdrs) {
            vus[nvu].vtype = RD_KAFKA_VTYPE_HEADERS;
            vus[nvu++].u.headers = res->hdrs;
        }
        /* A full local queue is back-pressure, not failure: serve delivery
         * reports to make room and retry, but not forever. */
        int64_t give_up = kr_ts_mono_ms() + KR_TS_FLUSH_MS;
        for (;;) {
            rd_kafka_error_t *e = rd_kafka_produceva(res->rk, vus, nvu);
            if (!e) {
                res->hdrs = NULL; /* librdkafka owns them now */
                break;
            }
            rd_kafka_resp_err_t code = rd_kafka_error_code(e);
            snprintf(err, sizeof(err), "%s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            if (code != RD_KAFKA_RESP_ERR__QUEUE_FULL || kr_ts_mono_ms() > give_up)
                return luaL_error(L, "produce: records[%d]: %s", (int)i, err);
            rd_kafka_poll(res->rk, 10);
        }
        rd_kafka_poll(res->rk, 0);
        lua_settop(L, base);
    }

    if (rd_kafka_flush(res->rk, KR_TS_FLUSH_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return luaL_error(L, "produce: %d record(s) still undelivered after %d ms",
                          rd_kafka_outq_len(res->rk), KR_TS_FLUSH_MS);
    if (res->dr_failed > 0)
        return luaL_error(L, "produce: %d of %d record(s) failed delivery; first: %s",
                          (int)res->dr_failed, (int)nrec, res->dr_err);
    lua_pushinteger(L, res->dr_ok);
    return 1;
}

/* ---------------------------------------------------------------- consume */

/* Pushes msg as {topic, partition, offset, key, value, timestamp, headers}. */
static void kr_ts_push_record(lua_State *L, rd_kafka_message_t *msg)
{
    lua_createtable(L, 0, 7);
    lua_pushstring(L, rd_kafka_topic_name(msg->rkt));
    lua_setfield(L, -2, "topic");
    lua_pushinteger(L, msg->partition);
    lua_setfield(L, -2, "partition");
    lua_pushinteger(L, msg->offset);
    lua_setfield(L, -2, "offset");
    if (msg->key) {
        lua_pushlstring(L, msg->key, msg->key_len);
        lua_setfield(L, -2, "key");
    }
    if (msg->payload) {
        lua_pushlstring(L, msg->payload, msg->len);
        lua_setfield(L, -2, "value");
    }
    lua_pushinteger(L, rd_kafka_message_timestamp(msg, NULL));
    lua_setfield(L, -2, "timestamp");

    rd_kafka_headers_t *hdrs; /* owned by msg */
    size_t nh = 0;
    if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
        nh = rd_kafka_header_cnt(hdrs);
    lua_createtable(L, (int)nh, 0);
    for (size_t h = 0; h < nh; h++) {
        const char *name;
        const void *val;
        size_t size;
        if (rd_kafka_header_get_all(hdrs, h, &name, &val, &size))
            break;
        lua_createtable(L, 2, 0);
        lua_pushstring(L, name);
        lua_rawseti(L, -2, 1);
        if (val) {
            lua_pushlstring(L, val, size);
            lua_rawseti(L, -2, 2);
        }
        lua_rawseti(L, -2, (lua_Integer)h + 1);
    }
    lua_setfield(L, -2, "headers");
}

static int kr_ts_consume(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    const char *topic = luaL_checkstring(L, 2);
    lua_Integer min = 0, timeout = 10000, idle = 300;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (kr_ts_int_field(L, 3, "min", &min) < 0 ||
            kr_ts_int_field(L, 3, "timeout", &timeout) < 0 ||
            kr_ts_int_field(L, 3, "idle", &idle) < 0)
            return luaL_error(L, "consume: opts.min/timeout/idle must be integers");
    }
    int64_t deadline = kr_ts_mono_ms() + timeout;
    kr_ts_res_t *res = kr_ts_res_new(L);
    char err[512], group[64];
    /* A fresh group per call: nothing is committed (auto commit is off)
     * and no subscription is made, the id only satisfies librdkafka. */
    static unsigned seq;
    snprintf(group, sizeof(group), "kroute-ts-%d-%lld-%u", (int)getpid(),
             (long long)kr_ts_clock_ms(CLOCK_REALTIME), ++seq);
    /* fetch.wait.max.ms=10: the mock holds an empty Fetch for the full wait
     * even when data arrives (MOCK-BROKER.md). */
    /* clang-format off */
    const char *const kv[] = {
        "group.id", group,
        "enable.auto.commit", "false",
        "enable.auto.offset.store", "false",
        "enable.partition.eof", "false",
        "fetch.wait.max.ms", "10",
        NULL};
    /* clang-format on */
    if (kr_ts_connect(res, RD_KAFKA_CONSUMER, brokers, kv, NULL, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "consume: %s", err);
    rd_kafka_poll_set_consumer(res->rk);
    if (kr_ts_load_partitions(res, topic, deadline - kr_ts_mono_ms(), err, sizeof(err)) !=
        0)
        return kr_ts_fail(L, "consume: no metadata for topic %s: %s", topic, err);
    for (int i = 0; i < res->parts->cnt; i++)
        res->parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t e = rd_kafka_assign(res->rk, res->parts);
    if (e)
        return kr_ts_fail(L, "consume: assign: %s", rd_kafka_err2str(e));

    /* Records are bucketed per partition: librdkafka hands out each
     * partition's messages in offset order, so concatenating the buckets in
     * partition order yields (partition, offset) order without a sort. */
    lua_newtable(L);
    int buckets = lua_gettop(L);
    lua_Integer count = 0;
    int64_t quiet_since = kr_ts_mono_ms(); /* idle is counted from assign too */
    for (;;) {
        int64_t now = kr_ts_mono_ms();
        int64_t wait = deadline - now;
        if (count >= min) {
            int64_t idle_left = idle - (now - quiet_since);
            if (idle_left < wait)
                wait = idle_left;
        }
        if (wait <= 0)
            break;
        if (wait > 1000)
            wait = 1000; /* keeps the int cast safe for huge timeouts */
        res->msg = rd_kafka_consumer_poll(res->rk, (int)wait);
        if (!res->msg)
            continue;
        if (!res->msg->err) {
            if (lua_rawgeti(L, buckets, res->msg->partition) == LUA_TNIL) {
                lua_pop(L, 1);
                lua_newtable(L);
                lua_pushvalue(L, -1);
                lua_rawseti(L, buckets, res->msg->partition);
            }
            kr_ts_push_record(L, res->msg);
            lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
            lua_pop(L, 1);
            count++;
            quiet_since = kr_ts_mono_ms();
        }
        /* Errors (e.g. a broker briefly down) are transient for a reader that
         * only returns what it got; the caller asserts on the count. */
        rd_kafka_message_destroy(res->msg);
        res->msg = NULL;
    }

    lua_createtable(L, (int)count, 0);
    lua_Integer n = 0;
    for (int i = 0; i < res->parts->cnt; i++) {
        if (lua_rawgeti(L, buckets, res->parts->elems[i].partition) == LUA_TTABLE) {
            lua_Integer len = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer j = 1; j <= len; j++) {
                lua_rawgeti(L, -1, j);
                lua_rawseti(L, -3, ++n);
            }
        }
        lua_pop(L, 1);
    }
    return 1;
}

/* --------------------------------------------------- offsets / watermarks */

static int kr_ts_high_watermarks(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    const char *topic = luaL_checkstring(L, 2);
    kr_ts_res_t *res = kr_ts_res_new(L);
    char err[512];
    if (kr_ts_connect(res, RD_KAFKA_PRODUCER, brokers, NULL, NULL, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "high_watermarks: %s", err);
    if (kr_ts_load_partitions(res, topic, KR_TS_META_MS, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "high_watermarks: no metadata for topic %s: %s", topic, err);
    lua_createtable(L, 0, res->parts->cnt);
    for (int i = 0; i < res->parts->cnt; i++) {
        int32_t p = res->parts->elems[i].partition;
        int64_t lo, hi;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(res->rk, topic, p, &lo, &hi, KR_TS_META_MS);
        if (e)
            return kr_ts_fail(L, "high_watermarks: %s [%d]: %s", topic, (int)p,
                              rd_kafka_err2str(e));
        lua_pushinteger(L, hi);
        lua_rawseti(L, -2, p);
    }
    return 1;
}

/* ts.watermarks(brokers) -> an object whose :sum(topic, partitions)
 * returns the sum of the high watermarks of partitions 0..n-1 through one
 * reused client: benchmarks sample progress every few milliseconds. */
#define KR_TS_WM_MT "kroute.testsupport.watermarks"

static int kr_ts_wm_gc(lua_State *L)
{
    rd_kafka_t **rk = luaL_checkudata(L, 1, KR_TS_WM_MT);
    if (*rk)
        rd_kafka_destroy(*rk);
    *rk = NULL;
    return 0;
}

static int kr_ts_wm_sum(lua_State *L)
{
    rd_kafka_t **rk = luaL_checkudata(L, 1, KR_TS_WM_MT);
    const char *topic = luaL_checkstring(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    luaL_argcheck(L, *rk, 1, "closed");
    lua_Integer sum = 0;
    for (lua_Integer p = 0; p < n; p++) {
        int64_t lo, hi;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(*rk, topic, (int32_t)p, &lo,
                                                                 &hi, KR_TS_META_MS);
        if (e)
            return kr_ts_fail(L, "watermarks: %s [%d]: %s", topic, (int)p, rd_kafka_err2str(e));
        sum += hi;
    }
    lua_pushinteger(L, sum);
    return 1;
}

static int kr_ts_watermarks(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    rd_kafka_t **rk = lua_newuserdatauv(L, sizeof(*rk), 0);
    *rk = NULL;
    if (luaL_newmetatable(L, KR_TS_WM_MT)) {
        lua_pushcfunction(L, kr_ts_wm_gc);
        lua_setfield(L, -2, "__gc");
        lua_newtable(L);
        lua_pushcfunction(L, kr_ts_wm_sum);
        lua_setfield(L, -2, "sum");
        lua_setfield(L, -2, "__index");
    }
    lua_setmetatable(L, -2);
    kr_ts_res_t tmp;
    memset(&tmp, 0, sizeof(tmp));
    char err[512];
    if (kr_ts_connect(&tmp, RD_KAFKA_PRODUCER, brokers, NULL, NULL, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "watermarks: %s", err);
    *rk = tmp.rk;
    return 1;
}

static int kr_ts_committed(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    const char *group = luaL_checkstring(L, 2);
    const char *topic = luaL_checkstring(L, 3);
    kr_ts_res_t *res = kr_ts_res_new(L);
    char err[512];
    /* Joins no group: OffsetFetch only needs the group's coordinator, so the
     * group's live members are not disturbed. */
    const char *const kv[] = {"group.id", group, "enable.auto.commit", "false", NULL};
    if (kr_ts_connect(res, RD_KAFKA_CONSUMER, brokers, kv, NULL, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "committed: %s", err);
    if (kr_ts_load_partitions(res, topic, KR_TS_META_MS, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "committed: no metadata for topic %s: %s", topic, err);
    rd_kafka_resp_err_t e = rd_kafka_committed(res->rk, res->parts, KR_TS_COMMITTED_MS);
    if (e)
        return kr_ts_fail(L, "committed: %s", rd_kafka_err2str(e));
    lua_createtable(L, 0, res->parts->cnt);
    for (int i = 0; i < res->parts->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &res->parts->elems[i];
        if (tp->err)
            return kr_ts_fail(L, "committed: %s [%d]: %s", topic, (int)tp->partition,
                              rd_kafka_err2str(tp->err));
        lua_pushinteger(L, tp->offset); /* RD_KAFKA_OFFSET_INVALID (-1001): none */
        lua_rawseti(L, -2, tp->partition);
    }
    return 1;
}

/* ----------------------------------------------------------- mock cluster */

/* The mock cluster runs on threads of a dedicated producer handle that
 * never produces; it must outlive the cluster and is destroyed after it. */
typedef struct kr_ts_mock {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
} kr_ts_mock_t;

static void kr_ts_mock_release(kr_ts_mock_t *m)
{
    if (m->mc)
        rd_kafka_mock_cluster_destroy(m->mc);
    if (m->rk)
        rd_kafka_destroy(m->rk);
    m->mc = NULL;
    m->rk = NULL;
}

static kr_ts_mock_t *kr_ts_mock_check(lua_State *L)
{
    kr_ts_mock_t *m = luaL_checkudata(L, 1, KR_TS_MOCK_MT);
    if (!m->mc)
        luaL_error(L, "mock cluster is closed");
    return m;
}

static int kr_ts_mock_cluster(lua_State *L)
{
    lua_Integer n = luaL_optinteger(L, 1, 1);
    if (n < 1 || n > 64)
        return luaL_error(L, "mock_cluster: broker_count must be 1..64");
    /* Userdata first: if it cannot be allocated, nothing is held yet. */
    kr_ts_mock_t *m = lua_newuserdatauv(L, sizeof(*m), 0);
    memset(m, 0, sizeof(*m));
    luaL_setmetatable(L, KR_TS_MOCK_MT);
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return kr_ts_fail(L, "mock_cluster: %s", err);
    }
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!m->rk) {
        rd_kafka_conf_destroy(conf);
        return kr_ts_fail(L, "mock_cluster: %s", err);
    }
    m->mc = rd_kafka_mock_cluster_new(m->rk, (int)n);
    if (!m->mc) {
        kr_ts_mock_release(m);
        return kr_ts_fail(L, "mock_cluster: rd_kafka_mock_cluster_new failed");
    }
    return 1;
}

static int kr_ts_mock_bootstraps(lua_State *L)
{
    lua_pushstring(L, rd_kafka_mock_cluster_bootstraps(kr_ts_mock_check(L)->mc));
    return 1;
}

static int kr_ts_mock_create_topic(lua_State *L)
{
    kr_ts_mock_t *m = kr_ts_mock_check(L);
    const char *name = luaL_checkstring(L, 2);
    lua_Integer parts = luaL_checkinteger(L, 3);
    if (parts < 1 || parts > 100000)
        return luaL_error(L, "create_topic: partitions must be positive");
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(m->mc, name, (int)parts, 1);
    if (e)
        return kr_ts_fail(L, "create_topic %s: %s", name, rd_kafka_err2str(e));
    lua_pushboolean(L, 1);
    return 1;
}

/* Fault injection, for the fault-tolerance specs. Broker ids are 1..n. */
static int kr_ts_mock_broker_state(lua_State *L)
{
    kr_ts_mock_t *m = kr_ts_mock_check(L);
    int32_t id = (int32_t)luaL_checkinteger(L, 2);
    int up = lua_toboolean(L, 3);
    rd_kafka_resp_err_t e = up ? rd_kafka_mock_broker_set_up(m->mc, id)
                               : rd_kafka_mock_broker_set_down(m->mc, id);
    if (e)
        return kr_ts_fail(L, "broker %d: %s", (int)id, rd_kafka_err2str(e));
    lua_pushboolean(L, 1);
    return 1;
}

/* :rtt(broker_id, ms) */
static int kr_ts_mock_rtt(lua_State *L)
{
    kr_ts_mock_t *m = kr_ts_mock_check(L);
    rd_kafka_resp_err_t e = rd_kafka_mock_broker_set_rtt(
        m->mc, (int32_t)luaL_checkinteger(L, 2), (int)luaL_checkinteger(L, 3));
    if (e)
        return kr_ts_fail(L, "rtt: %s", rd_kafka_err2str(e));
    lua_pushboolean(L, 1);
    return 1;
}

/* :request_errors(api_key, {error_code, ...}): the next requests of that
 * API (0 Produce, 1 Fetch, 8 OffsetCommit, 12 Heartbeat...) fail in turn */
static int kr_ts_mock_request_errors(lua_State *L)
{
    kr_ts_mock_t *m = kr_ts_mock_check(L);
    int16_t api = (int16_t)luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    size_t n = lua_rawlen(L, 3);
    rd_kafka_resp_err_t *errs = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*errs), 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 3, (lua_Integer)i + 1);
        errs[i] = (rd_kafka_resp_err_t)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
    }
    rd_kafka_mock_push_request_errors_array(m->mc, api, n, errs);
    lua_pushboolean(L, 1);
    return 1;
}

/* :set_leader(topic, partition, broker_id) */
static int kr_ts_mock_set_leader(lua_State *L)
{
    kr_ts_mock_t *m = kr_ts_mock_check(L);
    rd_kafka_resp_err_t e = rd_kafka_mock_partition_set_leader(
        m->mc, luaL_checkstring(L, 2), (int32_t)luaL_checkinteger(L, 3),
        (int32_t)luaL_checkinteger(L, 4));
    if (e)
        return kr_ts_fail(L, "set_leader: %s", rd_kafka_err2str(e));
    lua_pushboolean(L, 1);
    return 1;
}

/* :coordinator(group, broker_id): moves the group's coordinator */
static int kr_ts_mock_coordinator(lua_State *L)
{
    kr_ts_mock_t *m = kr_ts_mock_check(L);
    rd_kafka_resp_err_t e = rd_kafka_mock_coordinator_set(
        m->mc, "group", luaL_checkstring(L, 2), (int32_t)luaL_checkinteger(L, 3));
    if (e)
        return kr_ts_fail(L, "coordinator: %s", rd_kafka_err2str(e));
    lua_pushboolean(L, 1);
    return 1;
}

static int kr_ts_mock_close(lua_State *L)
{
    kr_ts_mock_release(luaL_checkudata(L, 1, KR_TS_MOCK_MT));
    return 0;
}

static int kr_ts_mock_tostring(lua_State *L)
{
    kr_ts_mock_t *m = luaL_checkudata(L, 1, KR_TS_MOCK_MT);
    if (m->mc)
        lua_pushfstring(L, "mock_cluster(%s)", rd_kafka_mock_cluster_bootstraps(m->mc));
    else
        lua_pushliteral(L, "mock_cluster(closed)");
    return 1;
}

/* ----------------------------------------------------------------- module */

static const luaL_Reg kr_ts_mock_methods[] = {
    {"bootstraps", kr_ts_mock_bootstraps},
    {"create_topic", kr_ts_mock_create_topic},
    {"broker_state", kr_ts_mock_broker_state},
    {"rtt", kr_ts_mock_rtt},
    {"request_errors", kr_ts_mock_request_errors},
    {"set_leader", kr_ts_mock_set_leader},
    {"coordinator", kr_ts_mock_coordinator},
    {"close", kr_ts_mock_close},
    {NULL, NULL},
};

/* --------------------------------------------------- bounded libraries */

typedef struct kr_ts_bound {
    int64_t start_ms, deadline_ms;
    size_t mem_limit; /* 0: none */
    char msg[64];
} kr_ts_bound_t;

static const char *kr_ts_bound_check(lua_State *L, void *ud)
{
    (void)L;
    kr_ts_bound_t *bound = ud;
    if (kr_ts_mono_ms() <= bound->deadline_ms)
        return NULL;
    snprintf(bound->msg, sizeof(bound->msg), "timeout: ran longer than %lld ms",
             (long long)(bound->deadline_ms - bound->start_ms));
    return bound->msg;
}

static size_t kr_ts_bound_mem(void *ud)
{
    return ((kr_ts_bound_t *)ud)->mem_limit;
}

/* [-0, +1, m] a shallow copy of the library package.loaded[name] */
static void kr_ts_copy_lib(lua_State *L, const char *name)
{
    lua_newtable(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_settable(L, -5);
    }
    lua_pop(L, 1);
}

/* bounded_lib(deadline_ms [, mem_limit]) -> {string = ..., table = ...}:
 * copies of the string and table libraries with core/strbound.c's bounded
 * functions, under a deadline counted from this call (and string.rep
 * limited to mem_limit bytes when given). */
static int kr_ts_bounded_lib(lua_State *L)
{
    lua_Integer ms = luaL_checkinteger(L, 1);
    lua_Integer mem = luaL_optinteger(L, 2, 0);
    lua_settop(L, 0);
    kr_ts_bound_t *bound = lua_newuserdatauv(L, sizeof(*bound), 0);
    bound->start_ms = kr_ts_mono_ms();
    bound->deadline_ms = bound->start_ms + ms;
    bound->mem_limit = mem > 0 ? (size_t)mem : 0;
    lua_newtable(L);
    kr_ts_copy_lib(L, "string");
    kr_ts_copy_lib(L, "table");
    kr_strbound_install(L, 3, 4, 1, kr_ts_bound_check, bound,
                        bound->mem_limit ? kr_ts_bound_mem : NULL);
    lua_setfield(L, 2, "table");
    lua_setfield(L, 2, "string");
    return 1;
}

static const luaL_Reg kr_ts_funcs[] = {
    {"spawn", kr_ts_spawn},
    {"kill", kr_ts_kill},
    {"wait", kr_ts_wait},
    {"sleep", kr_ts_sleep},
    {"now", kr_ts_now},
    {"monotonic", kr_ts_monotonic},
    {"read_file", kr_ts_read_file},
    {"produce", kr_ts_produce},
    {"consume", kr_ts_consume},
    {"high_watermarks", kr_ts_high_watermarks},
    {"watermarks", kr_ts_watermarks},
    {"committed", kr_ts_committed},
    {"mock_cluster", kr_ts_mock_cluster},
    {"bounded_lib", kr_ts_bounded_lib},
    {NULL, NULL},
};

int luaopen_kroute_testsupport(lua_State *L)
{
    luaL_newmetatable(L, KR_TS_RES_MT);
    lua_pushcfunction(L, kr_ts_res_gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, kr_ts_res_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    luaL_newmetatable(L, KR_TS_MOCK_MT);
    luaL_newlib(L, kr_ts_mock_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, kr_ts_mock_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, kr_ts_mock_close);
    lua_setfield(L, -2, "__close"); /* local c <close> = mock_cluster(1) */
    lua_pushcfunction(L, kr_ts_mock_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_newlib(L, kr_ts_funcs);
    return 1;
}

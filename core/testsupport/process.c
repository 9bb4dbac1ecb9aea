/* testsupport/process.c - process control for specs: spawn a child (argv,
 * env overrides, cwd, stdout/stderr appended to files), signal it, wait for
 * it with a timeout; sleep, wall and monotonic clocks; read a whole file.
 * Lets integration specs run kroute as a child and SIGKILL it. Nothing here
 * talks to Kafka. */
#include "internal.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>

#include "clock.h"

extern char **environ;

/* ------------------------------------------------------------------ clocks */

static int kr_ts_sleep(lua_State *L)
{
    kr_ts_sleep_ms(luaL_checkinteger(L, 1));
    return 0;
}

static int kr_ts_now(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)kr_ts_wall_ms());
    return 1;
}

static int kr_ts_monotonic(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)kr_clock_ms());
    return 1;
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
    int64_t deadline = kr_clock_ms() + timeout;
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
        if (timeout >= 0 && kr_clock_ms() >= deadline)
            return kr_ts_fail(L, "timeout");
        kr_ts_sleep_ms(10);
    }
}


static const luaL_Reg kr_ts_process_funcs[] = {
    {"spawn", kr_ts_spawn},
    {"kill", kr_ts_kill},
    {"wait", kr_ts_wait},
    {"sleep", kr_ts_sleep},
    {"now", kr_ts_now},
    {"monotonic", kr_ts_monotonic},
    {"read_file", kr_ts_read_file},
    {NULL, NULL},
};

void kr_ts_process_open(lua_State *L)
{
    luaL_setfuncs(L, kr_ts_process_funcs, 0);
}

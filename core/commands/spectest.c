/* spectest.c - see spectest.h. */
#include "commands/spectest.h"

#include "config/config.h"
#include "config/errors.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DEPTH 4 /* route folder, handler folders, their subfolders */

typedef struct list {
    char **v;
    size_t n;
} list_t;

static void add(list_t *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s))
            return;
    l->v = realloc(l->v, (l->n + 2) * sizeof(*l->v));
    if (!l->v || !(l->v[l->n] = strdup(s)))
        abort();
    l->v[++l->n] = NULL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static void find_specs(const char *dir, int depth, list_t *out)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "node_modules"))
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < MAX_DEPTH)
            find_specs(path, depth + 1, out);
        else if (S_ISREG(st.st_mode) && ends_with(e->d_name, "_spec.lua"))
            add(out, path);
    }
    closedir(d);
}

/* The folder holding native.so: .build/lua beside a built kroute, or
 * PREFIX/lib/kroute/lua beside an installed one. */
static const char *native_dir(void)
{
    static char path[PATH_MAX];
    char exe[PATH_MAX - 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    const char *rels[] = {"lua", "../lib/kroute/lua"};
    for (size_t i = 0; i < 2; i++) {
        char so[PATH_MAX + 64];
        snprintf(so, sizeof(so), "%s/%s/kroute/native.so", exe, rels[i]);
        if (access(so, R_OK) == 0) {
            snprintf(path, sizeof(path), "%s/%s", exe, rels[i]);
            return path;
        }
    }
    return NULL;
}

/* busted's script on PATH (it is run with lua5.4, whatever its #! says). */
static int find_busted(char *out, size_t size)
{
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : "/usr/bin:/bin");
    int found = 0;
    for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir && !found;
         dir = strtok_r(NULL, ":", &save)) {
        snprintf(out, size, "%s/busted", dir);
        found = access(out, X_OK) == 0;
    }
    free(copy);
    return found;
}

int kr_spectest_run(const char *const *paths, int cnt, const char *lua_dir)
{
    list_t specs = {0};
    const char *here[] = {"routes"};
    if (cnt == 0) {
        paths = here;
        cnt = 1;
    }
    for (int i = 0; i < cnt; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0) {
            fprintf(stderr, "kroute test: %s: no such file or folder\n", paths[i]);
            return 2;
        }
        if (S_ISDIR(st.st_mode)) {
            find_specs(paths[i], 0, &specs);
        } else {
            char dir[PATH_MAX];
            snprintf(dir, sizeof(dir), "%s", paths[i]);
            char *slash = strrchr(dir, '/');
            if (slash)
                *slash = '\0';
            else
                snprintf(dir, sizeof(dir), ".");
            find_specs(dir, 0, &specs);
        }
    }
    /* and beside the handlers the routes use: their folder, and specs
     * directly in the folder above it (examples/x/handlers/h.lua is
     * tested by examples/x/x_spec.lua) */
    kr_errors_t errs = {0};
    kr_config_t *cfg = kr_config_load(paths, (size_t)cnt, &errs);
    for (size_t i = 0; cfg && i < cfg->route_cnt; i++) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", cfg->routes[i].handler);
        char *slash = strrchr(dir, '/');
        if (!slash)
            continue;
        *slash = '\0';
        find_specs(dir, 0, &specs);
        if ((slash = strrchr(dir, '/'))) {
            *slash = '\0';
            find_specs(dir, MAX_DEPTH, &specs);
        }
    }
    kr_config_free(cfg);
    kr_errors_free(&errs);
    if (!specs.n) {
        printf("kroute test: no *_spec.lua files beside the route files\n");
        return 0;
    }
    char busted[PATH_MAX];
    if (!find_busted(busted, sizeof(busted))) {
        fprintf(stderr, "kroute test: busted not found on PATH (apt-get install lua-busted)\n");
        return 2;
    }
    char lpath[PATH_MAX * 2 + 64], cpath[PATH_MAX + 64];
    snprintf(lpath, sizeof(lpath), "%s/?.lua;%s/?/init.lua;;", lua_dir, lua_dir);
    const char *nd = native_dir();
    snprintf(cpath, sizeof(cpath), "%s/?.so;;", nd ? nd : ".");
    setenv("LUA_PATH", lpath, 1);
    setenv("LUA_CPATH", cpath, 1);
    char **argv = calloc(specs.n + 4, sizeof(*argv));
    if (!argv)
        abort();
    argv[0] = "lua5.4";
    argv[1] = busted;
    for (size_t i = 0; i < specs.n; i++)
        argv[2 + i] = specs.v[i];
    fflush(stdout);
    execvp("lua5.4", argv);
    perror("kroute test: lua5.4");
    return 2;
}

/* watch.c - see watch.h. */
#include "ops/watch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

/* Written and closed, renamed in or out, deleted: not IN_MODIFY, which
 * fires in the middle of a write. */
#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE)

typedef struct watched_dir {
    int wd;
    char *path;
    char **names;       /* files of interest in it */
    size_t name_cnt;
    int route_folder;   /* any *.yaml / *.yml counts */
} watched_dir_t;

struct kr_watch {
    int fd;
    watched_dir_t *dirs;
    size_t dir_cnt;
};

kr_watch_t *kr_watch_new(char *err, size_t errsize)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errsize, "inotify: %s", strerror(errno));
        return NULL;
    }
    kr_watch_t *w = calloc(1, sizeof(*w));
    if (!w)
        abort();
    w->fd = fd;
    return w;
}

int kr_watch_fd(const kr_watch_t *w)
{
    return w->fd;
}

static void clear(kr_watch_t *w)
{
    for (size_t i = 0; i < w->dir_cnt; i++) {
        inotify_rm_watch(w->fd, w->dirs[i].wd);
        for (size_t j = 0; j < w->dirs[i].name_cnt; j++)
            free(w->dirs[i].names[j]);
        free(w->dirs[i].names);
        free(w->dirs[i].path);
    }
    free(w->dirs);
    w->dirs = NULL;
    w->dir_cnt = 0;
}

static watched_dir_t *dir_for(kr_watch_t *w, const char *path)
{
    for (size_t i = 0; i < w->dir_cnt; i++)
        if (!strcmp(w->dirs[i].path, path))
            return &w->dirs[i];
    int wd = inotify_add_watch(w->fd, path, WATCH_MASK);
    if (wd < 0)
        return NULL; /* the folder is gone: the reload that follows says so */
    w->dirs = realloc(w->dirs, (w->dir_cnt + 1) * sizeof(*w->dirs));
    if (!w->dirs)
        abort();
    watched_dir_t *d = &w->dirs[w->dir_cnt++];
    memset(d, 0, sizeof(*d));
    d->wd = wd;
    d->path = strdup(path);
    return d;
}

void kr_watch_set(kr_watch_t *w, const char *const *files, size_t file_cnt,
                  const char *const *folders, size_t folder_cnt)
{
    clear(w);
    for (size_t i = 0; i < folder_cnt; i++) {
        watched_dir_t *d = dir_for(w, folders[i]);
        if (d)
            d->route_folder = 1;
    }
    for (size_t i = 0; i < file_cnt; i++) {
        char dir[PATH_MAX];
        const char *slash = strrchr(files[i], '/');
        if (slash)
            snprintf(dir, sizeof(dir), "%.*s", (int)(slash - files[i]), files[i]);
        else
            snprintf(dir, sizeof(dir), ".");
        if (!dir[0])
            snprintf(dir, sizeof(dir), "/");
        watched_dir_t *d = dir_for(w, dir);
        if (!d)
            continue;
        d->names = realloc(d->names, (d->name_cnt + 1) * sizeof(*d->names));
        if (!d->names)
            abort();
        d->names[d->name_cnt++] = strdup(slash ? slash + 1 : files[i]);
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int relevant(const watched_dir_t *d, const char *name)
{
    if (d->route_folder && (ends_with(name, ".yaml") || ends_with(name, ".yml")))
        return 1;
    for (size_t i = 0; i < d->name_cnt; i++)
        if (!strcmp(d->names[i], name))
            return 1;
    return 0;
}

int kr_watch_read(kr_watch_t *w)
{
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    int changed = 0;
    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                changed = 1; /* events were lost: assume the worst */
                continue;
            }
            if (!ev->len || (ev->mask & IN_ISDIR))
                continue;
            if (ev->mask & IN_CREATE && !(ev->mask & IN_ISDIR))
                continue; /* its content arrives with IN_CLOSE_WRITE */
            for (size_t i = 0; i < w->dir_cnt; i++)
                if (w->dirs[i].wd == ev->wd && relevant(&w->dirs[i], ev->name))
                    changed = 1;
        }
    }
    return changed;
}

void kr_watch_free(kr_watch_t *w)
{
    if (!w)
        return;
    clear(w);
    close(w->fd);
    free(w);
}

/* watch.h - notices edits to the files a generation was built from
 * (inotify). Folders are watched rather than files, so an editor that
 * writes a temporary file and renames it over the original, and files
 * added to or deleted from a route folder, are all seen. */
#ifndef KR_WATCH_H
#define KR_WATCH_H

#include <stddef.h>

typedef struct kr_watch kr_watch_t;

/* NULL with the reason in err when inotify is not available. */
kr_watch_t *kr_watch_new(char *err, size_t errsize);
/* The descriptor to poll for POLLIN. */
int kr_watch_fd(const kr_watch_t *w);
/* Watches `files` (any change to one of them) and `folders` (a .yaml or
 * .yml file in them written, added, renamed or deleted); replaces what
 * was watched before. */
void kr_watch_set(kr_watch_t *w, const char *const *files, size_t file_cnt,
                  const char *const *folders, size_t folder_cnt);
/* Reads pending events; returns 1 when a watched file changed. */
int kr_watch_read(kr_watch_t *w);
void kr_watch_free(kr_watch_t *w);

#endif

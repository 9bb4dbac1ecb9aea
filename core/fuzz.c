/* fuzz.c - a fuzz target for kroute's parsers of untrusted text: route
 * files (YAML loader + ${VAR} expansion + validation), topic patterns and
 * JSON. The first byte picks the parser ('P' pattern, 'J' JSON, anything
 * else a route file). Built two ways:
 *   - with clang -fsanitize=fuzzer (`make fuzz`): libFuzzer drives it;
 *   - with KR_FUZZ_REGRESS (`make test`): main() replays a corpus folder
 *     under ASan+UBSan, so inputs that once crashed, or took seconds, stay
 *     fixed. */
#include <dirent.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec/json.h"
#include "config/config.h"
#include "config/pattern.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_pattern(const char *text)
{
    /* "pattern\ntopic" */
    char *nl = strchr(text, '\n');
    const char *topic = nl ? nl + 1 : "payment.completed";
    if (nl)
        *nl = '\0';
    kr_pattern_t p;
    char err[256];
    if (kr_pattern_compile(&p, text, err, sizeof(err)) == 0) {
        kr_pattern_match(&p, topic);
        kr_pattern_free(&p);
    }
}

static void fuzz_json(const char *text, size_t len)
{
    lua_State *L = luaL_newstate();
    luaopen_kroute_json(L); /* registers the array marker */
    lua_pop(L, 1);
    char err[256];
    int full = kr_json_decode(L, text, len, err, sizeof(err));
    if (full == 0)
        kr_json_encode(L, -1, err, sizeof(err));
    /* a path read checks the same text: it must fail exactly when the
     * full decode does */
    static const kr_json_key_t path[] = {{"a", 1}, {"b", 1}};
    if ((kr_json_decode_path(L, text, len, path, 2, err, sizeof(err)) == 0) != (full == 0))
        abort();
    lua_close(L);
}

static void fuzz_config(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/kroute-fuzz-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return;
    if (write(fd, data, size) == (ssize_t)size) {
        const char *paths[] = {path};
        kr_errors_t errs = {0};
        kr_config_t *cfg = kr_config_load(paths, 1, &errs);
        kr_config_free(cfg);
        kr_errors_free(&errs);
    }
    close(fd);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 0 && (data[0] == 'P' || data[0] == 'J')) {
        char *text = malloc(size); /* NUL-terminated copy without the mode byte */
        memcpy(text, data + 1, size - 1);
        text[size - 1] = '\0';
        if (data[0] == 'P')
            fuzz_pattern(text);
        else
            fuzz_json(text, size - 1);
        free(text);
    } else {
        fuzz_config(data, size);
    }
    return 0;
}

#ifdef KR_FUZZ_REGRESS
/* An input slower than this is a failure: the corpus also holds inputs
 * that once took tens of seconds (quadratic parsing), each a few
 * milliseconds now, so the bound is generous even under ASan on a loaded
 * machine. */
#define INPUT_SECONDS 20
#define INPUT_MAX_SIZE (16u << 20)

static char too_slow[4200]; /* the line SIGALRM prints: built before the run */

static void on_alarm(int sig)
{
    (void)sig;
    ssize_t n = write(STDOUT_FILENO, too_slow, strlen(too_slow));
    (void)n;
    _exit(1);
}

/* The whole of a corpus file; NULL for what is not a regular file (opened
 * without blocking: a FIFO would hang the replay) or cannot be read. */
static uint8_t *read_input(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    uint8_t *buf = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= INPUT_MAX_SIZE) {
        buf = malloc((size_t)st.st_size + 1); /* + 1: never malloc(0) */
        ssize_t n = buf ? read(fd, buf, (size_t)st.st_size) : -1;
        if (n < 0) {
            free(buf);
            buf = NULL;
        } else {
            *len = (size_t)n;
        }
    }
    close(fd);
    return buf;
}

/* Replays every file of the given folders; prints one TAP line per folder. */
int main(int argc, char **argv)
{
    signal(SIGALRM, on_alarm);
    int n = 0;
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        if (!d) {
            printf("not ok %d - corpus %s: cannot open\n", i, argv[i]);
            continue;
        }
        struct dirent *de;
        int files = 0;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
            size_t len = 0;
            uint8_t *buf = read_input(path, &len);
            if (!buf)
                continue;
            snprintf(too_slow, sizeof(too_slow), "not ok %d - %s took more than %d s\n", n + 1,
                     path, INPUT_SECONDS);
            fflush(stdout);
            alarm(INPUT_SECONDS);
            LLVMFuzzerTestOneInput(buf, len);
            alarm(0);
            free(buf);
            files++;
        }
        closedir(d);
        printf("ok %d - fuzz corpus %s replayed (%d inputs) without a sanitizer report\n", ++n,
               argv[i], files);
    }
    printf("1..%d\n", n);
    return 0;
}
#endif

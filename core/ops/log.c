/* log.c - the one place log lines are formatted and written.
 * Lines go to stderr as "TIME LEVEL [component] message", or as one JSON
 * object per line (--log-format json), one write(2) per line so lines
 * from librdkafka's and the workers' threads never interleave mid-line.
 * It does not buffer or rotate: stderr is the operator's to redirect. */
#include "ops/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_level = KR_LOG_INFO;
static int log_json;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

int kr_log_parse_level(const char *name)
{
    for (int i = 0; i <= KR_LOG_OFF; i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    if (strcasecmp(name, "warning") == 0)
        return KR_LOG_WARN;
    return -1;
}

void kr_log_set_level(int level)
{
    log_level = level;
}

void kr_log_set_json(int on)
{
    log_json = on;
}

/* Appends s as a JSON string (control characters escaped; bytes >= 0x80
 * copied as they are: log text is the handlers' and librdkafka's). */
static size_t json_text(char *out, size_t cap, size_t len, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (len < cap)
        out[len++] = '"';
    for (size_t i = 0; i < n && len + 7 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[len++] = '\\';
            out[len++] = (char)c;
        } else if (c == '\n') {
            out[len++] = '\\';
            out[len++] = 'n';
        } else if (c < 0x20) {
            memcpy(out + len, "\\u00", 4);
            len += 4;
            out[len++] = hex[c >> 4];
            out[len++] = hex[c & 15];
        } else {
            out[len++] = (char)c;
        }
    }
    if (len < cap)
        out[len++] = '"';
    return len;
}

/* The JSON line: the "key=value ...: " prefix kroute puts on lines about a
 * message (route, topic, partition, offset, group) becomes fields. */
static size_t json_line(char *out, size_t cap, const char *ts, int level, const char *component,
                        const char *msg)
{
    size_t len = (size_t)snprintf(out, cap, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":", ts,
                                  level_names[level]);
    len = json_text(out, cap, len, component, strlen(component));
    const char *p = msg;
    for (;;) {
        static const char *const keys[] = {"route", "topic", "partition", "offset", "group"};
        size_t k, klen = 0;
        for (k = 0; k < 5; k++) {
            klen = strlen(keys[k]);
            if (!strncmp(p, keys[k], klen) && p[klen] == '=')
                break;
        }
        if (k == 5)
            break;
        const char *v = p + klen + 1;
        size_t vlen = strcspn(v, " :\n");
        if (!vlen)
            break;
        int numeric = k == 2 || k == 3;
        len += (size_t)snprintf(out + len, cap > len ? cap - len : 0, ",\"%s\":", keys[k]);
        if (numeric && strspn(v, "-0123456789") == vlen && len + vlen < cap) {
            memcpy(out + len, v, vlen);
            len += vlen;
        } else {
            len = json_text(out, cap, len, v, vlen);
        }
        p = v + vlen;
        if (*p == ' ') {
            p++;
        } else {
            if (*p == ':')
                p += p[1] == ' ' ? 2 : 1;
            break;
        }
    }
    if (len + 8 < cap) {
        memcpy(out + len, ",\"msg\":", 7);
        len += 7;
    }
    len = json_text(out, cap - 2, len, p, strlen(p));
    out[len++] = '}';
    return len;
}

int kr_log_enabled(int level)
{
    return level >= log_level;
}

static void log_write(int level, const char *component, const char *fmt, va_list ap)
{
    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    char ts[64]; /* 24 used; room for any year gcc imagines */
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(tv.tv_usec / 1000));
    if (log_json) {
        char msg[4096], out[8192];
        vsnprintf(msg, sizeof(msg), fmt, ap);
        size_t len = json_line(out, sizeof(out) - 1, ts, level, component, msg);
        out[len++] = '\n';
        ssize_t w = write(STDERR_FILENO, out, len);
        (void)w;
        return;
    }
    int n = snprintf(line, sizeof(line), "%s %-5s [%s] ", ts, level_names[level], component);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void kr_log(int level, const char *component, const char *fmt, ...)
{
    if (level < log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_write(level, component, fmt, ap);
    va_end(ap);
}

static void log_call(int level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_write(level, component, fmt, ap);
    va_end(ap);
}

void kr_log_rdkafka(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug */
    int lvl = level <= 3 ? KR_LOG_ERROR
              : level == 4 ? KR_LOG_WARN
              : level <= 6 ? KR_LOG_INFO
                           : KR_LOG_DEBUG;
    if (lvl < log_level)
        return;
    log_call(lvl, "rdkafka", "%s %s: %s", rk ? rd_kafka_name(rk) : "-", fac, buf);
}

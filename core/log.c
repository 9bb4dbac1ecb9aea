/* log.c - the one place log lines are formatted and written.
 * Lines go to stderr as "TIME LEVEL [component] message", one write(2) per
 * line so lines from librdkafka's threads never interleave mid-line.
 * It does not buffer or rotate: stderr is the operator's to redirect. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_level = KR_LOG_INFO;

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
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[level], component);
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

/* clock.h - the monotonic clock every timer in kroute reads (deadlines,
 * backoff, the watchdog): immune to wall-clock jumps. */
#ifndef KR_CLOCK_H
#define KR_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t kr_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t kr_clock_ms(void)
{
    return kr_clock_ns() / 1000000;
}

#endif

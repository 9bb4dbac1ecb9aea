/* jsnum.c - see jsnum.h. The digits come from printf's correctly rounded
 * %.*e and strtod's correctly rounded reading, so "reads back as the same
 * double" is checked exactly rather than assumed:
 * - a normal double whose shortest form has <= 15 digits: %.14e gives
 *   those digits padded with zeros (any <= 15-digit decimal survives a
 *   round trip through a double, DBL_DIG), so one try finds them;
 * - otherwise 16 digits, then 17 (which always read back);
 * - subnormals have fewer significant bits: every length is tried.
 * At each length the correctly rounded candidate is the closest one, as
 * ECMAScript requires; when it does not read back, the next one up still
 * may (just above a power of two the gap to the next double is twice the
 * gap below), so that one is tried too. */
#include "codec/jsnum.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Digits of a (> 0) rounded to p significant digits: *dig gets them (no
 * dot, NUL-terminated), *e10 the decimal exponent of the first one. */
static void round_digits(double a, int p, char dig[24], int *e10)
{
    char tmp[40];
    snprintf(tmp, sizeof(tmp), "%.*e", p - 1, a);
    size_t k = 0;
    char *c = tmp;
    for (; *c && *c != 'e'; c++)
        if (*c >= '0' && *c <= '9')
            dig[k++] = *c;
    dig[k] = '\0';
    *e10 = atoi(c + 1);
}

static double read_back(const char *dig, int e10)
{
    char tmp[48];
    snprintf(tmp, sizeof(tmp), "%c.%se%d", dig[0], dig + 1, e10);
    return strtod(tmp, NULL);
}

/* The next decimal up at the same length (999 -> 100 with e10 + 1). */
static void next_up(char *dig, int *e10)
{
    size_t i = strlen(dig);
    while (i-- > 0) {
        if (dig[i] != '9') {
            dig[i]++;
            return;
        }
        dig[i] = '0';
    }
    dig[0] = '1';
    (*e10)++;
}

/* The shortest p-digit form of a that reads back, or 0 when none. */
static int try_length(double a, int p, char dig[24], int *e10)
{
    round_digits(a, p, dig, e10);
    double back = read_back(dig, *e10);
    if (back == a)
        return 1;
    if (back > a)
        return 0; /* the next one down is farther than the (smaller) gap below */
    next_up(dig, e10);
    return read_back(dig, *e10) == a;
}

static void shortest_digits(double a, char dig[24], int *e10)
{
    if (a >= DBL_MIN) {
        if (!try_length(a, 15, dig, e10) && !try_length(a, 16, dig, e10))
            round_digits(a, 17, dig, e10);
    } else {
        for (int p = 1; p <= 17; p++)
            if (try_length(a, p, dig, e10) || p == 17)
                break;
    }
    size_t k = strlen(dig);
    while (k > 1 && dig[k - 1] == '0')
        dig[--k] = '\0';
}

size_t kr_jsnum_text(double d, char out[KR_JSNUM_MAX])
{
    if (d == 0) { /* -0 too: JavaScript prints "0" */
        strcpy(out, "0");
        return 1;
    }
    char dig[24], *o = out;
    int e10;
    if (d < 0)
        *o++ = '-';
    double a = fabs(d);
    /* integers below 2^53 are their own shortest digits: the common case,
     * written without printf (its float formatting costs more than the
     * rest of encoding a small object) */
    if (a < 9007199254740992.0 && a == floor(a)) {
        char rev[20];
        int n = 0;
        for (uint64_t u = (uint64_t)a; u; u /= 10)
            rev[n++] = (char)('0' + u % 10);
        while (n)
            *o++ = rev[--n];
        *o = '\0';
        return (size_t)(o - out);
    }
    shortest_digits(a, dig, &e10);
    int k = (int)strlen(dig), n = e10 + 1; /* a = 0.dig x 10^n */
    if (k <= n && n <= 21) {
        memcpy(o, dig, (size_t)k);
        memset(o + k, '0', (size_t)(n - k));
        o += n;
    } else if (0 < n && n <= 21) {
        memcpy(o, dig, (size_t)n);
        o[n] = '.';
        memcpy(o + n + 1, dig + n, (size_t)(k - n));
        o += k + 1;
    } else if (-6 < n && n <= 0) {
        memcpy(o, "0.", 2);
        memset(o + 2, '0', (size_t)-n);
        memcpy(o + 2 - n, dig, (size_t)k);
        o += 2 - n + k;
    } else {
        *o++ = dig[0];
        if (k > 1) {
            *o++ = '.';
            memcpy(o, dig + 1, (size_t)(k - 1));
            o += k - 1;
        }
        o += sprintf(o, "e%c%d", n - 1 < 0 ? '-' : '+', abs(n - 1));
    }
    *o = '\0';
    return (size_t)(o - out);
}

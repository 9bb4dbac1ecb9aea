/* utf8.c - see utf8.h. The byte ranges are the Unicode Standard's table
 * 3-7 (well-formed UTF-8); where a sequence breaks off decides how many
 * bytes one U+FFFD stands for (WHATWG "maximal subpart" rule). */
#include "codec/utf8.h"

size_t kr_utf8_next(const char *p, size_t avail, int *ok)
{
    const unsigned char *s = (const unsigned char *)p;
    unsigned char lo = 0x80, hi = 0xBF;
    size_t need;
    *ok = 0;
    if (s[0] < 0x80) {
        *ok = 1;
        return 1;
    }
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        need = 1;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        need = 2;
        if (s[0] == 0xE0)
            lo = 0xA0; /* overlong */
        else if (s[0] == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        need = 3;
        if (s[0] == 0xF0)
            lo = 0x90; /* overlong */
        else if (s[0] == 0xF4)
            hi = 0x8F; /* past U+10FFFF */
    } else {
        return 1; /* a continuation byte, C0/C1 or F5..FF */
    }
    /* only the first continuation byte has the narrowed range */
    for (size_t i = 1; i <= need; i++) {
        if (i >= avail || s[i] < lo || s[i] > hi)
            return i; /* bytes so far were a valid start: one U+FFFD for them */
        lo = 0x80;
        hi = 0xBF;
    }
    *ok = 1;
    return need + 1;
}

size_t kr_utf8_valid_prefix(const char *s, size_t len)
{
    size_t i = 0;
    int ok;
    while (i < len) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = kr_utf8_next(s + i, len - i, &ok);
        if (!ok)
            break;
        i += n;
    }
    return i;
}

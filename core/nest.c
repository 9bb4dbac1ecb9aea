/* nest.c - see nest.h. */
#include "nest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

char *kr_nest_header(const rd_kafka_headers_t *hdrs, const char *name)
{
    const void *val;
    size_t size;
    if (!hdrs || rd_kafka_header_get_last(hdrs, name, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, val, size);
    s[size] = '\0';
    return s;
}

int kr_nest_parse_request(const rd_kafka_headers_t *hdrs, kr_nest_req_t *req)
{
    memset(req, 0, sizeof(*req));
    req->reply_partition = RD_KAFKA_PARTITION_UA;
    req->correlation = kr_nest_header(hdrs, KR_NEST_CORRELATION);
    req->reply_topic = kr_nest_header(hdrs, KR_NEST_REPLY_TOPIC);
    if (!req->correlation || !req->reply_topic || !*req->reply_topic) {
        kr_nest_req_free(req);
        return 0;
    }
    char *part = kr_nest_header(hdrs, KR_NEST_REPLY_PARTITION);
    if (part) {
        char *end;
        long p = strtol(part, &end, 10);
        if (*part && !*end && p >= 0 && p <= INT32_MAX)
            req->reply_partition = (int32_t)p;
        free(part);
    }
    return 1;
}

void kr_nest_req_free(kr_nest_req_t *req)
{
    free(req->correlation);
    free(req->reply_topic);
    req->correlation = req->reply_topic = NULL;
}

rd_kafka_headers_t *kr_nest_reply_headers(const kr_nest_req_t *req, const char *err)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(3);
    rd_kafka_header_add(h, KR_NEST_CORRELATION, -1, req->correlation, -1);
    if (err)
        rd_kafka_header_add(h, KR_NEST_ERR, -1, *err ? err : "error", -1);
    rd_kafka_header_add(h, KR_NEST_DISPOSED, -1, "\0", 1);
    return h;
}

void kr_nest_correlation_id(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        for (size_t i = 0; i < sizeof(b); i++) /* getrandom cannot fail for 16 bytes */
            b[i] = (unsigned char)rand();
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

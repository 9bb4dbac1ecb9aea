/* hash.h - the one string hash kroute's hash tables use (FNV-1a, 32-bit):
 * lanes by partition, keys to workers, offset stores, route-file keys. */
#ifndef KR_HASH_H
#define KR_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define KR_HASH_SEED 2166136261u /* FNV-1a's offset basis */

/* Hashes len bytes at p, continuing from h (KR_HASH_SEED to start). */
static inline uint32_t kr_hash_bytes(const void *p, size_t len, uint32_t h)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

/* A partition of a topic: the topic's hash mixed with the partition's. */
static inline uint32_t kr_hash_partition(const char *topic, int32_t partition)
{
    return kr_hash_bytes(topic, strlen(topic), KR_HASH_SEED) ^
           ((uint32_t)partition * 2654435761u);
}

#endif

/* graph.h - `kroute graph`: the topology of route files (topics -> routes
 * -> output topics, emits, DLQs, requests and replies) as a Mermaid
 * flowchart or a Graphviz digraph, printed to a stream. */
#ifndef KR_GRAPH_H
#define KR_GRAPH_H

#include <stdio.h>

#include "config/config.h"

enum { KR_GRAPH_MERMAID, KR_GRAPH_DOT };

void kr_graph_write(const kr_config_t *cfg, int format, FILE *out);

#endif

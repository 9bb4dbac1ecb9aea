/* graph.c - see graph.h. Nodes get short generated ids (t1, r1...) so any
 * topic name or regex is safe in either syntax; labels carry the text. */
#include "commands/graph.h"

#include <stdlib.h>
#include <string.h>

typedef struct graph {
    int format;
    FILE *out;
    char **topics; /* declared topic nodes, index + 1 = id */
    size_t topic_cnt;
} graph_t;

/* The label with the characters each syntax treats specially escaped. */
static void label(graph_t *g, const char *s)
{
    for (; *s; s++) {
        if (*s == '"')
            fputs(g->format == KR_GRAPH_DOT ? "\\\"" : "#quot;", g->out);
        else if (*s == '\\' && g->format == KR_GRAPH_DOT)
            fputs("\\\\", g->out);
        else
            fputc(*s, g->out);
    }
}

/* The id of the topic node for `name` (declared on first use). */
static size_t topic(graph_t *g, const char *name)
{
    for (size_t i = 0; i < g->topic_cnt; i++)
        if (!strcmp(g->topics[i], name))
            return i + 1;
    g->topics = realloc(g->topics, (g->topic_cnt + 1) * sizeof(*g->topics));
    if (!g->topics || !(g->topics[g->topic_cnt] = strdup(name)))
        abort();
    size_t id = ++g->topic_cnt;
    if (g->format == KR_GRAPH_DOT) {
        fprintf(g->out, "  t%zu [shape=cylinder, label=\"", id);
        label(g, name);
        fputs("\"];\n", g->out);
    } else {
        fprintf(g->out, "  t%zu[(\"", id);
        label(g, name);
        fputs("\")]\n", g->out);
    }
    return id;
}

static void edge(graph_t *g, char from_kind, size_t from, char to_kind, size_t to,
                 const char *what, int dashed)
{
    if (g->format == KR_GRAPH_DOT) {
        fprintf(g->out, "  %c%zu -> %c%zu", from_kind, from, to_kind, to);
        if (what || dashed) {
            fputs(" [", g->out);
            if (what)
                fprintf(g->out, "label=\"%s\"%s", what, dashed ? ", " : "");
            if (dashed)
                fputs("style=dashed", g->out);
            fputc(']', g->out);
        }
        fputs(";\n", g->out);
    } else if (what) {
        fprintf(g->out, "  %c%zu %s|%s| %c%zu\n", from_kind, from, dashed ? "-.->" : "-->", what,
                to_kind, to);
    } else {
        fprintf(g->out, "  %c%zu %s %c%zu\n", from_kind, from, dashed ? "-.->" : "-->", to_kind,
                to);
    }
}

void kr_graph_write(const kr_config_t *cfg, int format, FILE *out)
{
    graph_t g = {.format = format, .out = out};
    fputs(format == KR_GRAPH_DOT ? "digraph kroute {\n  rankdir=LR;\n" : "flowchart LR\n", out);
    for (size_t i = 0; i < cfg->route_cnt; i++) {
        const kr_route_t *r = &cfg->routes[i];
        size_t id = i + 1;
        const char *file = strrchr(r->handler, '/');
        file = file ? file + 1 : r->handler;
        const char *group = kr_route_group(cfg, r);
        if (format == KR_GRAPH_DOT) {
            fprintf(out, "  r%zu [shape=box, style=rounded, label=\"", id);
            label(&g, r->name);
            fputs("\\n", out);
            label(&g, file);
            fputs("\\ngroup ", out);
            label(&g, group);
            fputs("\"];\n", out);
        } else {
            fprintf(out, "  r%zu(\"", id);
            label(&g, r->name);
            fputs("<br/>", out);
            label(&g, file);
            fputs("<br/>group ", out);
            label(&g, group);
            fputs("\")\n", out);
        }
        for (size_t j = 0; j < r->pattern_cnt; j++) {
            char text[600];
            /* a regex is shown as written in the route file: /.../ */
            snprintf(text, sizeof(text),
                     r->patterns[j].kind == KR_MATCH_REGEX ? "/%s/" : "%s", r->patterns[j].text);
            edge(&g, 't', topic(&g, text), 'r', id, NULL, 0);
        }
        if (r->to)
            edge(&g, 'r', id, 't', topic(&g, r->to), NULL, 0);
        for (size_t j = 0; j < r->emit_cnt; j++)
            edge(&g, 'r', id, 't', topic(&g, r->emits[j]), "emit", 0);
        for (size_t j = 0; j < r->request_cnt; j++) {
            char reply[512];
            snprintf(reply, sizeof(reply), "%s.reply", r->requests[j]);
            edge(&g, 'r', id, 't', topic(&g, r->requests[j]), "request", 1);
            edge(&g, 't', topic(&g, reply), 'r', id, "reply", 1);
        }
        if (r->reply_nest)
            edge(&g, 'r', id, 't', topic(&g, "<caller's reply topic>"), "reply", 1);
        if (!r->dlq_off) {
            char dlq[512];
            if (!r->dlq && r->pattern_cnt == 1)
                snprintf(dlq, sizeof(dlq), "%s.dlq", r->patterns[0].text);
            else
                snprintf(dlq, sizeof(dlq), "%s", r->dlq ? r->dlq : "<topic>.dlq");
            edge(&g, 'r', id, 't', topic(&g, dlq), "DLQ", 1);
        }
    }
    if (format == KR_GRAPH_DOT)
        fputs("}\n", out);
    for (size_t i = 0; i < g.topic_cnt; i++)
        free(g.topics[i]);
    free(g.topics);
}

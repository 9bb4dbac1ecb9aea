/* outcome.c - see outcome.h. */
#include "engine/outcome.h"

int kr_outcome_answers(const kr_outcome_route_t *route, int is_request)
{
    return route->reply_nest && is_request;
}

/* A returned value on a reply route that is not an output: the reply
 * itself (or one after it), or an event's value with no `to` to go to. */
static int returned_elsewhere(const kr_record_t *rec, const kr_outcome_route_t *route,
                              int is_request)
{
    return route->reply_nest && rec->returned && (is_request || !route->to);
}

int kr_outcome_is_output(const kr_run_t *run, size_t i, const kr_outcome_route_t *route,
                         int is_request)
{
    return !returned_elsewhere(&run->recs[i], route, is_request);
}

void kr_outcome_plan(const kr_run_t *run, const kr_outcome_route_t *route, int is_request,
                     kr_outcome_t *out)
{
    *out = (kr_outcome_t){.reply_rec = -1};
    out->reply = kr_outcome_answers(route, is_request);
    for (size_t i = 0; i < run->cnt; i++) {
        const kr_record_t *rec = &run->recs[i];
        if (returned_elsewhere(rec, route, is_request)) {
            if (out->reply && out->reply_rec < 0)
                out->reply_rec = (long)i;
            continue;
        }
        if (!rec->topic && !route->to) {
            *out = (kr_outcome_t){.reply_rec = -1,
                                  .fail = "the handler returned a value but the route has no "
                                          "'to' topic (set `to:` or return "
                                          "kroute.record{topic=...})"};
            return;
        }
        out->outputs++;
    }
    out->filtered = !out->reply && out->outputs == 0;
}

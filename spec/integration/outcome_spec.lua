-- One outcome plan: what `kroute run` does with a finished run (outputs,
-- emits, a NestJS reply) is what kroute.testing reports for the same route
-- file, handler and message. Each case runs through both; the outputs and
-- replies are compared field by field (topic, key, value, a handler header).
-- Cases: events and requests on a plain route, on a `reply: nest` route with
-- `to`, and on one without; the handler emits and returns a record with
-- key and headers plus a second value.
local env = require "support.env"
local ts = env.ts
local testing = require "kroute.testing"

-- (kroute.testing reads the same file, without TEST_BROKERS set)
local ROUTES = env.fast_kafka:gsub("%${TEST_BROKERS}", "${TEST_BROKERS:-unset}") .. [[
routes:
  - name: plain
    match: oc.plain
    handler: h.lua
    to: oc.out
  - name: rto
    match: oc.rto
    handler: h.lua
    to: oc.out
    reply: nest
  - name: rnone
    match: oc.rnone
    handler: h.lua
    reply: nest
]]

local HANDLER = [[
local kroute = require "kroute"
return function(msg)
  kroute.emit("oc.audit", "saw " .. msg.value, { key = "a" })
  return kroute.record{ key = "k-" .. msg.value, value = { v = msg.value },
                        headers = { h = "x-" .. msg.value } },
         "second " .. msg.value
end
]]

-- route, input topic; each is sent as an event and as a NestJS request
local ROUTE_TOPICS = {plain = "oc.plain", rto = "oc.rto", rnone = "oc.rnone"}

local function request_headers(id)
  return {{"kafka_correlationId", id}, {"kafka_replyTopic", "oc.reply"},
          {"kafka_replyPartition", "0"}}
end

-- {topic, key, value, h} rows of records, sorted: comparable as lists
local function rows(recs)
  local out = {}
  for _, r in ipairs(recs) do
    out[#out + 1] = table.concat({r.topic or "?", r.key or "<nil>", r.value or "<null>",
                                  env.header(r, "h") or "<none>"}, " | ")
  end
  table.sort(out)
  return out
end

describe("one outcome plan", function()
  it("kroute run produces what kroute.testing reports, for events and requests on every kind of route", function()
    local broker = env.broker{"oc.plain:1", "oc.rto:1", "oc.rnone:1", "oc.out:1", "oc.audit:1",
                              "oc.reply:1"}
    local dir = env.tmpdir()
    env.write(dir .. "/r.yaml", ROUTES)
    env.write(dir .. "/h.lua", HANDLER)

    -- what the test kit says, case by case
    local cases, want_outputs, want_replies, per_topic = {}, 0, 0, {}
    for name, topic in pairs(ROUTE_TOPICS) do
      local h = assert(testing.route(dir .. "/r.yaml", name))
      for _, kind in ipairs{"ev", "rq"} do
        local id = name .. "-" .. kind
        local msg = {topic = topic, key = "in", value = id,
                     headers = kind == "rq" and request_headers(id) or {{"trace", id}}}
        local res = h:run(msg, {raw = true})
        assert.is_true(res.ok, res.error)
        cases[#cases + 1] = {id = id, msg = msg, res = res}
        want_outputs = want_outputs + #res.records
        for _, rec in ipairs(res.records) do
          per_topic[rec.topic] = (per_topic[rec.topic] or 0) + 1
        end
        if res.reply or res.reply_headers and res.is_request then
          want_replies = want_replies + 1
        end
      end
    end
    -- (the cases differ: the plan is not trivially the same everywhere)
    assert.same({["oc.out"] = 6, ["oc.audit"] = 6}, per_topic)
    assert.equal(12, want_outputs)
    assert.equal(2, want_replies)

    local r = env.kroute(dir, broker.addr)
    assert.is_truthy(r:wait_assigned(30000), r:logtext())
    for _, c in ipairs(cases) do
      ts.produce(broker.addr, c.msg.topic, {{key = c.msg.key, value = c.msg.value,
                                              headers = c.msg.headers}})
    end
    local got = {}
    for _, t in ipairs{"oc.out", "oc.audit"} do
      for _, rec in ipairs(env.consume(broker.addr, t, per_topic[t], 30000)) do
        rec.topic = t
        got[#got + 1] = rec
      end
    end
    local replies = env.consume(broker.addr, "oc.reply", want_replies, 30000)
    r:stop_clean()
    assert.equal(want_outputs, #got, r:logtext())
    assert.equal(want_replies, #replies)

    for _, c in ipairs(cases) do
      local mine = {}
      for _, rec in ipairs(got) do
        -- each input's outputs carry its id in the value ("saw <id>", ...)
        local v = rec.value or ""
        if v:find(c.id .. "\"", 1, true) or v:sub(-#c.id) == c.id then mine[#mine + 1] = rec end
      end
      assert.same(rows(c.res.records), rows(mine), c.id)
      local reply
      for _, rec in ipairs(replies) do
        if env.header(rec, "kafka_correlationId") == c.id then reply = rec end
      end
      assert.equal(c.res.reply ~= nil, reply ~= nil, c.id)
      if reply then
        assert.equal(c.res.reply, reply.value, c.id)
        assert.equal(c.res.reply_key, reply.key, c.id)
        local h = env.header(reply, "h")
        local want_h
        for _, x in ipairs(c.res.reply_headers) do if x[1] == "h" then want_h = x[2] end end
        assert.equal(want_h, h, c.id)
      end
    end
    r:cleanup()
    broker.stop()
  end)
end)

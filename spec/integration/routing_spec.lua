-- End to end through the kroute binary and a `kroute broker` child:
-- transform, filter, fan-out, keys/headers/partitions, the DLQ path, regex
-- subscriptions that pick up topics created later, ${VAR} expansion.
local env = require "support.env"
local ts = env.ts
local json = require("kroute.native").json

describe("kroute run", function()
  local broker, router, dir

  setup(function()
    broker = env.broker{"orders.in:4", "orders.out:4", "fan.in:2", "poison.in:1", "filter.in:2",
                         "keyed.in:1", "keyed.out:1", "sized.in:1"}
    dir = env.tmpdir()
    env.write(dir .. "/routes.yaml", env.fast_kafka .. [[
routes:
  - name: transform
    match: orders.in
    handler: h/transform.lua
    to: orders.out
  - name: filter
    match: filter.in
    handler: h/filter.lua
    to: filter.out
  - name: fanout
    match: fan.in
    handler: h/fanout.lua
    to: fan.a
  - name: poison
    match: poison.in
    handler: h/poison.lua
    to: poison.out
    retry: { attempts: 2, backoff: 10ms, max_backoff: 20ms }
  - name: keyed
    match: keyed.in
    handler: h/poison.lua
    to: keyed.out
    ordering: key
    retry: { attempts: 2, backoff: 1500ms, max_backoff: 1500ms }
  - name: sized
    match: sized.in
    handler: h/poison.lua
    to: sized.out
    max_input: 1KiB
  - name: late
    match: /^late\.[a-z]+$/
    handler: h/late.lua
    to: ${LATE_OUT_TOPIC_UNSET_IN_TESTS:-results.late}
]])
    env.write(dir .. "/h/transform.lua", [[
local kroute = require "kroute"
return function(msg)
  local ev = assert(msg:json())
  ev.amount = ev.amount * 2
  ev.seen_trace = msg.headers.trace -- a repeated header: a list
  return ev
end
]])
    env.write(dir .. "/h/filter.lua", [[
return function(msg)
  local ev = msg:json()
  if ev and ev.keep then return msg.value end
end
]])
    env.write(dir .. "/h/fanout.lua", [[
local kroute = require "kroute"
return function(msg)
  kroute.emit("fan.c", "emitted " .. msg.value, { key = false })
  return msg.value, kroute.record{ topic = "fan.b", key = "k-" .. msg.key,
                                   value = { from = msg.value }, headers = { via = "fanout" } }
end
]])
    env.write(dir .. "/h/poison.lua", [[
return function(msg)
  if msg.value == "bad" then error("poison pill at offset " .. msg.offset) end
  return msg.value
end
]])
    env.write(dir .. "/h/late.lua", [[
return function(msg) return msg.topic .. ":" .. msg.value end
]])
    router = env.kroute(dir, broker.addr)
    assert(router:wait_assigned(30000), router:logtext())
  end)

  teardown(function()
    if router then
      local code = router:stop()
      router:cleanup()
      assert.equal(0, code)
    end
    if broker then broker.stop() end
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("transforms JSON and keeps keys, headers and key partitioning", function()
    local input = {}
    for i = 1, 200 do
      input[i] = {key = "user-" .. (i % 17), value = json.encode{id = i, amount = i},
                  headers = {{"trace", "t" .. i}, {"bin", "\0\1\255"}, {"trace", "again"}}}
    end
    ts.produce(broker.addr, "orders.in", input)
    local inputs = env.consume(broker.addr, "orders.in", 200)
    local part_of = {}
    for _, r in ipairs(inputs) do part_of[r.key] = r.partition end
    local out = env.consume(broker.addr, "orders.out", 200)
    assert.equal(200, #out)
    local by_id = {}
    for _, r in ipairs(out) do
      local ev = json.decode(r.value)
      by_id[ev.id] = true
      assert.equal(ev.id * 2, ev.amount)
      assert.equal("user-" .. (ev.id % 17), r.key)
      -- same key, same partition count: the output lands where the Java
      -- client (murmur2) put the input
      assert.equal(part_of[r.key], r.partition)
      local _, traces = env.header(r, "trace")
      assert.same({"t" .. ev.id, "again"}, traces)
      assert.equal("\0\1\255", (env.header(r, "bin")))
      assert.same({"t" .. ev.id, "again"}, ev.seen_trace)
    end
    for i = 1, 200 do assert.is_true(by_id[i], "missing id " .. i) end
  end)

  it("filters out what the handler does not return", function()
    local input = {}
    for i = 1, 50 do
      input[i] = {key = "k" .. i, value = json.encode{n = i, keep = i % 5 == 0}}
    end
    ts.produce(broker.addr, "filter.in", input)
    local out = env.consume(broker.addr, "filter.out", 10, 15000)
    assert.equal(10, #out)
    for _, r in ipairs(out) do assert.equal(0, json.decode(r.value).n % 5) end
  end)

  it("fans out to several topics with emit and kroute.record", function()
    local input = {}
    for i = 1, 20 do input[i] = {key = tostring(i), value = "v" .. i} end
    ts.produce(broker.addr, "fan.in", input)
    local a = env.consume(broker.addr, "fan.a", 20)
    local b = env.consume(broker.addr, "fan.b", 20)
    local c = env.consume(broker.addr, "fan.c", 20)
    assert.equal(20, #a)
    assert.equal(20, #b)
    assert.equal(20, #c)
    local seen = {}
    for _, r in ipairs(b) do
      local from = json.decode(r.value).from
      assert.equal("k-" .. from:sub(2), r.key)
      assert.equal("fanout", (env.header(r, "via")))
      seen[from] = true
    end
    for i = 1, 20 do assert.is_true(seen["v" .. i]) end
    for _, r in ipairs(c) do
      assert.is_nil(r.key)
      assert.matches("^emitted v%d+$", r.value)
    end
    for _, r in ipairs(a) do assert.equal("v" .. r.key, r.value) end
  end)

  it("retries a failing handler, dead-letters the message with the reason, and moves on", function()
    ts.produce(broker.addr, "poison.in", {
      {key = "a", value = "good-1"},
      {key = "p", value = "bad", headers = {{"origin", "test"}}},
      {key = "b", value = "good-2"},
    })
    local dlq = env.consume(broker.addr, "poison.in.dlq", 1, 15000)
    assert.equal(1, #dlq)
    local d = dlq[1]
    assert.equal("p", d.key)
    assert.equal("bad", d.value)
    assert.equal("test", (env.header(d, "origin")))
    assert.equal("poison.in", (env.header(d, "kafka_dlt-original-topic")))
    assert.equal("0", (env.header(d, "kafka_dlt-original-partition")))
    assert.equal("1", (env.header(d, "kafka_dlt-original-offset")))
    assert.matches("^%d+$", (env.header(d, "kafka_dlt-original-timestamp")))
    assert.matches("poison pill at offset 1", (env.header(d, "kafka_dlt-exception-message")))
    assert.matches("stack traceback", (env.header(d, "kafka_dlt-exception-stacktrace")))
    local out = env.consume(broker.addr, "poison.out", 2)
    assert.same({"good-1", "good-2"}, {out[1].value, out[2].value})
    assert.matches("attempt 1/2 failed", router:logtext())
    assert.matches("poison pill at offset 1\nstack traceback", router:logtext())
  end)

  it("with ordering: key, holds only the retrying message's key", function()
    ts.produce(broker.addr, "keyed.in", {
      {key = "p", value = "bad"}, {key = "a", value = "a1"}, {key = "p", value = "p2"},
      {key = "b", value = "b1"}, {key = "a", value = "a2"}, {key = "p", value = "p3"},
    })
    local out = env.consume(broker.addr, "keyed.out", 5, 20000)
    local order = {}
    for i, r in ipairs(out) do order[i] = r.value end
    -- one partition in, one out: the output order is the order of handling.
    -- Keys a and b went on while p's first message waited 1.5 s for its
    -- retry; p's later messages waited for it and kept their order. (a and
    -- b may run on different worker threads: their relative order is free.)
    local pos = {}
    for i, v in ipairs(order) do pos[v] = i end
    assert.equal(5, #order)
    assert.same({"p2", "p3"}, {order[4], order[5]})
    assert.is_true(pos.a1 < pos.a2)
    assert.is_truthy(pos.b1)
    local dlq = env.consume(broker.addr, "keyed.in.dlq", 1, 15000)
    assert.equal("bad", dlq[1].value)
    assert.equal("0", (env.header(dlq[1], "kafka_dlt-original-offset")))
    -- and the offset only moves past p's messages once they are done
    assert.is_truthy(env.wait_for(function()
      return (ts.committed(broker.addr, "kroute", "keyed.in")[0] or 0) == 6
    end, 10000))
  end)

  it("dead-letters an input larger than max_input without running the handler", function()
    ts.produce(broker.addr, "sized.in", {
      {key = "k", value = "small"}, {key = "k", value = ("x"):rep(2000)}, {key = "k", value = "fine"},
    })
    local out = env.consume(broker.addr, "sized.out", 2, 15000)
    assert.same({"small", "fine"}, {out[1].value, out[2].value})
    local dlq = env.consume(broker.addr, "sized.in.dlq", 1, 15000)
    assert.equal(1, #dlq)
    assert.equal(2000, #dlq[1].value)
    assert.equal("input of 2001 bytes exceeds max_input (1024 bytes)",
                 (env.header(dlq[1], "kafka_dlt-exception-message")))
    assert.equal("1", (env.header(dlq[1], "kafka_dlt-original-offset")))
  end)

  it("picks up topics created after start through a regex match", function()
    ts.produce(broker.addr, "late.arrival", {{key = "x", value = "hello"}})
    local out = env.consume(broker.addr, "results.late", 1, 25000)
    assert.equal(1, #out)
    assert.equal("late.arrival:hello", out[1].value)
  end)
end)

-- End to end through the kroute binary and a `kroute broker` child: what a
-- handler forwards as it is (tombstones, null header values, also in DLQ
-- copies), and JSON decoding that runs out of a route's memory. Run with
-- KROUTE_BIN=.build/kroute-asan, LeakSanitizer checks at stop that the
-- failed decodes left nothing behind.
local env = require "support.env"
local ts = env.ts

-- found, value of header `name` (value nil: a null header value)
local function header(rec, name)
  for _, h in ipairs(rec.headers or {}) do
    if h[1] == name then return true, h[2] end
  end
  return false
end

local function by_key(recs)
  local out = {}
  for _, r in ipairs(recs) do out[r.key] = r end
  return out
end

describe("records end to end", function()
  local broker, router, dir

  setup(function()
    broker = env.broker{"fwd.in:1", "fwd.out:1", "fwd.copy:1", "poison.in:1", "decode.in:1"}
    dir = env.tmpdir()
    env.write(dir .. "/routes.yaml", env.fast_kafka .. [[
routes:
  - name: forward
    match: fwd.in
    handler: forward.lua
    to: fwd.out
  - name: poison
    match: poison.in
    handler: poison.lua
    to: poison.out
    retry: { attempts: 1 }
  - name: decode
    match: decode.in
    handler: decode.lua
    to: decode.out
    memory: 1MiB
    max_input: 900KiB
]])
    env.write(dir .. "/forward.lua", [[
local kroute = require "kroute"
return function(msg)
  local mode = msg.headers.mode
  if mode == "value" then return msg.value end -- a tombstone's value is nil: filtered
  if mode == "copy" then
    return kroute.record{topic = "fwd.copy", value = "copy", headers = msg.headers}
  end
  return msg -- the input as it is
end
]])
    env.write(dir .. "/poison.lua", [[
return function(msg) error("rejected") end
]])
    env.write(dir .. "/decode.lua", [[
return function(msg)
  local failed = 0
  for _ = 1, 5 do
    local ok, err = pcall(msg.json, msg)
    if not ok and tostring(err):match("not enough memory") then failed = failed + 1 end
  end
  return tostring(failed)
end
]])
    router = env.kroute(dir, broker.addr)
    assert(router:wait_assigned(30000), router:logtext())
  end)

  teardown(function()
    if router then
      local code = router:stop() -- raises on a sanitizer report (a leak, under ASan)
      router:cleanup()
      assert.equal(0, code)
    end
    if broker then broker.stop() end
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("`return msg` forwards a tombstone as a tombstone, an empty value as empty", function()
    ts.produce(broker.addr, "fwd.in", {
      {key = "tomb", headers = {{"h", "1"}}},   -- no value: a tombstone
      {key = "empty", value = "", headers = {{"h", "2"}}},
      {key = "filtered", headers = {{"mode", "value"}}},
      {key = "last", value = "after"},
    })
    local out = by_key(env.consume(broker.addr, "fwd.out", 3))
    assert.is_truthy(out.tomb, "the tombstone was not forwarded")
    assert.is_nil(out.tomb.value)
    assert.equal("1", select(2, header(out.tomb, "h")))
    assert.equal("", out.empty.value)
    assert.equal("after", out.last.value)
    assert.is_nil(out.filtered) -- `return msg.value` of a tombstone filters it out
  end)

  it("keeps null header values null when forwarding and copying msg.headers", function()
    ts.produce(broker.addr, "fwd.in", {
      {key = "nullhdr", value = "n", headers = {{"nul"}, {"emp", ""}}},
      {key = "copied", value = "c", headers = {{"mode", "copy"}, {"nul"}, {"emp", ""}}},
    })
    local out = by_key(env.consume(broker.addr, "fwd.out", 4))
    local r = assert(out.nullhdr, "nothing forwarded")
    local found, v = header(r, "nul")
    assert.is_true(found)
    assert.is_nil(v)
    assert.same({true, ""}, {header(r, "emp")})
    local copy = env.consume(broker.addr, "fwd.copy", 1)
    assert.equal(1, #copy)
    found, v = header(copy[1], "nul")
    assert.is_true(found)
    assert.is_nil(v)
    assert.same({true, ""}, {header(copy[1], "emp")})
  end)

  it("keeps null header values null in the DLQ copy", function()
    ts.produce(broker.addr, "poison.in", {{key = "p", value = "p", headers = {{"nul"}, {"emp", ""}}}})
    local dlq = env.consume(broker.addr, "poison.in.dlq", 1)
    assert.equal(1, #dlq)
    local found, v = header(dlq[1], "nul")
    assert.is_true(found)
    assert.is_nil(v)
    assert.same({true, ""}, {header(dlq[1], "emp")})
    assert.matches("rejected", select(2, header(dlq[1], "kafka_dlt-exception-message")))
  end)

  it("decodes past the route's memory cap as a memory error, every time", function()
    -- a long escaped string (the decoder's scratch grows) and then more
    -- small strings than a 1 MiB VM can hold
    local value = '["' .. string.rep("a\\n", 150000) .. '",' .. string.rep('"a",', 100000)
                  .. '"a"]'
    ts.produce(broker.addr, "decode.in", {{key = "d", value = value}})
    local out = env.consume(broker.addr, "decode.out", 1)
    assert.equal(1, #out)
    assert.equal("5", out[1].value)
  end)
end)

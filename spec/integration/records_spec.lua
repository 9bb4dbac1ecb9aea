-- End to end through the kroute binary and a `kroute broker` child: what a
-- handler forwards as it is (tombstones, null header values, also in DLQ
-- copies), records of every size through runs that reuse their buffers,
-- and JSON decoding that runs out of a route's memory. Run with
-- KROUTE_BIN=.build/kroute-asan, LeakSanitizer checks at stop that the
-- failed decodes left nothing behind.
local env = require "support.env"
local ts = env.ts
local json = require("kroute.native").json

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
    broker = env.broker{"fwd.in:1", "fwd.out:1", "fwd.copy:1", "poison.in:1", "decode.in:1",
                        "sizes.in:1", "sizes.out:1"}
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
  - name: sizes
    match: sizes.in
    handler: sizes.lua
    to: sizes.out
]])
    -- input n: itself when n % 4 == 0, else n % 4 records, keys and values from empty to past the 2 KiB a
    -- recycled run keeps, so every buffer is reused at another size
    env.write(dir .. "/sizes.lua", [[
local kroute = require "kroute"
return function(msg)
  local n = tonumber(msg.value)
  if n % 4 == 0 then return msg.value end -- produced from the input's own bytes
  local out = {}
  for i = 1, n % 4 do
    local klen, vlen = (n * 7 + i) % 40, (n * 131 + i * 977) % 5000
    local key = klen > 0 and (n .. ":" .. i .. ":" .. ("k"):rep(klen)) or false
    local pad = string.char(97 + (n + i) % 26):rep(vlen)
    out[i] = kroute.record{key = key, value = i % 2 == 1 and {n = n, i = i, pad = pad} or pad}
  end
  return table.unpack(out, 1, n % 4)
end
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

  it("writes every record's own bytes through runs that reuse buffers of other sizes", function()
    local batch, want = {}, {}
    for n = 1, 400 do
      batch[n] = {key = "in" .. n, value = tostring(n)}
      if n % 4 == 0 then want[#want + 1] = {key = "in" .. n, value = tostring(n)} end
      for i = 1, n % 4 do
        local klen, vlen = (n * 7 + i) % 40, (n * 131 + i * 977) % 5000
        local pad = string.char(97 + (n + i) % 26):rep(vlen)
        want[#want + 1] = {
          key = klen > 0 and (n .. ":" .. i .. ":" .. ("k"):rep(klen)) or nil,
          value = i % 2 == 1 and {n = n, i = i, pad = pad} or pad}
      end
    end
    ts.produce(broker.addr, "sizes.in", batch)
    local got = env.consume(broker.addr, "sizes.out", #want)
    assert.equal(#want, #got)
    for j, w in ipairs(want) do -- one partition: in order
      assert.equal(w.key, got[j].key, "record " .. j .. "'s key")
      local value = got[j].value
      if type(w.value) == "table" then value = json.decode(value) end
      assert.is_true(type(w.value) == "table" and value.n == w.value.n and value.i == w.value.i
                     and value.pad == w.value.pad or value == w.value,
                     "record " .. j .. "'s value differs")
    end
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

-- kroute.request end to end, kroute to kroute: a reply: nest route answers,
-- caller routes in two kroute instances (one group) each get their own
-- replies; timeouts; a shutdown with a request pending fails it cleanly
-- and leaves the input uncommitted.
local env = require "support.env"
local ts = env.ts
local json = require("kroute.native").json

local function write_routes(dir)
  env.write_sum_responder(dir .. "/responder")
  env.write(dir .. "/caller/r.yaml", env.fast_kafka .. [[
routes:
  - name: caller
    match: calls
    handler: caller.lua
    to: results
    requests: [sum, nobody]
]])
  env.write(dir .. "/timeout-caller/r.yaml", env.fast_kafka .. [[
handler_root: ..
routes:
  - name: caller
    match: timeout-calls
    handler: ../caller/caller.lua
    to: results
    requests: [nobody]
]])
  env.write(dir .. "/keyed-caller/r.yaml", env.fast_kafka .. [[
handler_root: ..
routes:
  - name: caller
    match: keyed-calls
    handler: ../caller/caller.lua
    to: results
    ordering: key
    requests: [nobody]
]])
  env.write(dir .. "/caller/caller.lua", [[
local kroute = require "kroute"
return function(msg)
  local ev = assert(msg:json())
  local reply, err = kroute.request(ev.pattern or "sum", ev.items, { timeout = ev.timeout })
  kroute.log.info("request for", ev.id, "answered")
  return { id = ev.id, reply = reply, err = err }
end
]])
end

describe("kroute.request", function()
  local broker, dir

  setup(function()
    broker = env.broker{"sum:4", "sum.reply:4", "nobody:4", "nobody.reply:4", "calls:8",
                        "timeout-calls:2", "keyed-calls:1", "results:4"}
    dir = env.tmpdir()
    write_routes(dir)
  end)

  teardown(function()
    broker.stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("gets each instance of a shared group its own replies", function()
    local responder = env.kroute(dir .. "/responder", broker.addr)
    local a = env.kroute(dir .. "/caller", broker.addr)
    local b = env.kroute(dir .. "/caller", broker.addr)
    -- both callers hold partitions of calls and of sum.reply
    assert.is_truthy(env.wait_for(function()
      return a:logtext():match("group=kroute%-client assigned") and
             b:logtext():match("group=kroute%-client assigned") and
             a:logtext():match("group=kroute assigned %d+ partition%(s%): calls") and
             b:logtext():match("group=kroute assigned %d+ partition%(s%): calls")
    end, 40000), a:logtext() .. b:logtext())
    local input = {}
    for i = 1, 40 do
      input[i] = {key = "k" .. i, value = json.encode{id = i, items = {i, i, 1}}}
    end
    ts.produce(broker.addr, "calls", input)
    local out = env.consume(broker.addr, "results", 40, 30000)
    local ok = {}
    for _, r in ipairs(out) do
      local v = json.decode(r.value)
      -- a NestJS-style reply "6" stays a string, as NestJS's parser keeps it
      if v.reply == tostring(2 * v.id + 1) then ok[v.id] = true end
    end
    for i = 1, 40 do assert.is_true(ok[i], "no correct reply for " .. i) end
    -- both instances asked and were answered
    assert.matches("request for %d+ answered", a:logtext())
    assert.matches("request for %d+ answered", b:logtext())
    -- both callers leave together: stopping one while the other rebalances
    -- makes the second wait for the broker to finish that rebalance
    ts.kill(a.pid, "TERM")
    ts.kill(b.pid, "TERM")
    for _, r in ipairs{a, b, responder} do
      r:stop_clean()
      r:cleanup()
    end
  end)

  it("returns nil, \"timeout\" when nobody answers in time", function()
    -- its own input topic: the shared-group test above may leave calls
    -- uncommitted (the mock refuses commits during its rebalances), and each
    -- redelivered request to the stopped responder would wait out its 10 s
    local a = env.kroute(dir .. "/timeout-caller", broker.addr)
    assert.is_truthy(a:wait_log("group=kroute%-client assigned", 40000), a:logtext())
    assert.is_truthy(a:wait_log("group=kroute assigned", 40000), a:logtext())
    ts.produce(broker.addr, "timeout-calls", {{key = "t",
      value = json.encode{id = 1000, pattern = "nobody", items = {1}, timeout = 300}}})
    local got = env.wait_for(function()
      for _, r in ipairs(env.consume(broker.addr, "results", 0, 3000)) do
        local v = json.decode(r.value)
        if v.id == 1000 then return v end
      end
    end, 40000)
    assert.is_truthy(got, a:logtext())
    assert.equal("timeout", got.err)
    assert.is_nil(got.reply)
    a:stop_clean()
    a:cleanup()
  end)

  it("with ordering: key, has a request in flight for each key of a partition", function()
    local a = env.kroute(dir .. "/keyed-caller", broker.addr)
    assert.is_truthy(a:wait_log("group=kroute%-client assigned", 40000), a:logtext())
    assert.is_truthy(a:wait_log("group=kroute assigned", 40000), a:logtext())
    local function requests_sent()
      local n = 0
      for _, v in pairs(ts.high_watermarks(broker.addr, "nobody") or {}) do n = n + v end
      return n
    end
    local before = requests_sent()
    local batch = {}
    for i = 1, 5 do
      batch[i] = {key = "key" .. i, partition = 0,
                  value = json.encode{id = 3000 + i, pattern = "nobody", items = {i}, timeout = 60000}}
    end
    ts.produce(broker.addr, "keyed-calls", batch)
    -- all five are asked while none has an answer: one partition, five keys
    assert.is_truthy(env.wait_for(function() return requests_sent() - before >= 5 end, 20000),
                     a:logtext())
    for _, r in ipairs(env.consume(broker.addr, "results", 0, 1000)) do
      assert.is_true(json.decode(r.value).id < 3000)
    end
    a:stop_clean()
    a:cleanup()
  end)

  it("fails a pending request cleanly on shutdown and leaves its input uncommitted", function()
    local a = env.kroute(dir .. "/caller", broker.addr)
    assert.is_truthy(a:wait_log("group=kroute%-client assigned", 40000), a:logtext())
    assert.is_truthy(a:wait_log("group=kroute assigned", 40000), a:logtext())
    local before = ts.committed(broker.addr, "kroute", "calls")
    ts.produce(broker.addr, "calls", {{key = "p", partition = 0,
      value = json.encode{id = 2000, pattern = "nobody", items = {1}, timeout = 60000}}})
    assert.is_truthy(a:wait_log("%-> request nobody", 20000) or
                     env.wait_for(function()
                       local hw = ts.high_watermarks(broker.addr, "nobody")
                       local n = 0
                       for _, v in pairs(hw or {}) do n = n + v end
                       return n > 0
                     end, 40000), a:logtext())
    local t0 = ts.monotonic()
    a:stop_clean()
    assert.is_true(ts.monotonic() - t0 < 15000, "shutdown waited for the request")
    a:cleanup()
    local after = ts.committed(broker.addr, "kroute", "calls")
    local hw = ts.high_watermarks(broker.addr, "calls")
    -- the request's input was not committed: it will be handled again
    assert.is_true(after[0] < hw[0], "offset committed past a request that never finished")
    assert.is_true(after[0] >= before[0])
  end)
end)

-- Inputs and outputs too big for the producer (message.max.bytes, librdkafka's
-- default 1000000 here) never wedge a partition: the input goes to the DLQ
-- (truncated to fit when needed), the next message is routed, kroute keeps
-- running and a restart finds everything committed. On the mock the cluster
-- is inside this test process, so produce errors can be injected (that test
-- runs on the mock only); the mock keeps about 5 MiB per partition, so each
-- case has its own topic and sends only one big record.
local env = require "support.env"
local ts = env.ts

local MAX_INPUT = 1000000 - 65536 -- the default: message.max.bytes less 64 KiB

describe("records too big for the producer", function()
  local broker, mc, addr, dir, router
  local metrics_url
  local INPUTS = {"big.in", "grow.in", "loud.in", "refused.in"}
  if env.real then INPUTS[4] = nil end -- the refused case injects mock errors

  setup(function()
    broker = env.broker({"big.in:1", "grow.in:1", "loud.in:1", "refused.in:1", "big.out:1",
                         "big.in.dlq:1", "grow.out:1", "grow.in.dlq:1", "loud.out:1",
                         "loud.in.dlq:1", "refused.out:1", "refused.in.dlq:1"},
                        {in_process = true})
    mc, addr = broker.mock, broker.addr
    dir = env.tmpdir()
    env.write(dir .. "/routes.yaml", env.fast_kafka .. [[
routes:
  - name: echo
    match: big.in
    handler: echo.lua
    to: big.out
  - name: grow
    match: grow.in
    handler: grow.lua
    to: grow.out
  - name: loud
    match: loud.in
    handler: loud.lua
    to: loud.out
    max_input: 1MiB
    retry: { attempts: 1 }
  - name: refused
    match: refused.in
    handler: slow.lua
    to: refused.out
]])
    env.write(dir .. "/echo.lua", "return function(msg) return msg.value end\n")
    env.write(dir .. "/grow.lua", [[
return function(msg)
  if msg.value == "grow" then return ("g"):rep(2000000) end
  return msg.value
end
]])
    env.write(dir .. "/loud.lua", [[
return function(msg)
  if #msg.value > 1000 then error(("E"):rep(1200000)) end
  return msg.value
end
]])
    -- holds its partition for a second, so produce errors injected
    -- meanwhile hit its output
    env.write(dir .. "/slow.lua", [[
local kroute = require "kroute"
return function(msg)
  if msg.value == "slow" then
    local t = kroute.clock()
    while kroute.clock() - t < 1 do end
  end
  return msg.value
end
]])
    router = env.kroute(dir, addr)
    assert(router:wait_assigned(30000), router:logtext())
    metrics_url = router:admin_url() .. "/metrics"
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

  local function committed(topic)
    return env.wait_for(function()
      local c = ts.committed(addr, "kroute", topic)[0]
      return c == 2 and c
    end, 15000) or ts.committed(addr, "kroute", topic)[0]
  end

  local function still_running(r)
    return r:wait_exit(200) == nil
  end

  it("dead-letters a 1 MiB input passed through by default, truncated to fit", function()
    ts.produce(addr, "big.in", {{key = "k", value = ("x"):rep(1048576)},
                                {key = "k", value = "small"}})
    local out = env.consume(addr, "big.out", 1, 20000)
    assert.equal(1, #out)
    assert.equal("small", out[1].value)
    local dlq = env.consume(addr, "big.in.dlq", 1, 20000)
    assert.equal(1, #dlq)
    local d = dlq[1]
    assert.equal(("input of %d bytes exceeds max_input (%d bytes)"):format(1048577, MAX_INPUT),
                 (env.header(d, "kafka_dlt-exception-message")))
    assert.equal("k", d.key)
    assert.equal("value", (env.header(d, "kroute_dlt-truncated")))
    assert.equal("1048576", (env.header(d, "kroute_dlt-original-value-size")))
    assert.is_true(#d.value > 900000 and #d.value < 1000000, "value of " .. #d.value)
    assert.equal(("x"):rep(#d.value), d.value) -- a prefix of the original
    assert.equal("0", (env.header(d, "kafka_dlt-original-offset")))
    assert.equal(2, committed("big.in"))
    assert.is_true(still_running(router), router:logtext():sub(-3000))
  end)

  it("dead-letters the input of an output too large to produce, naming topic and size",
     function()
    ts.produce(addr, "grow.in", {{key = "g", value = "grow"}, {key = "g", value = "after"}})
    local out = env.consume(addr, "grow.out", 1, 20000)
    assert.equal(1, #out)
    assert.equal("after", out[1].value)
    local dlq = env.consume(addr, "grow.in.dlq", 1, 20000)
    assert.equal(1, #dlq)
    assert.equal("grow", dlq[1].value)
    assert.is_nil(env.header(dlq[1], "kroute_dlt-truncated"))
    -- key and value: 1 + 2000000 bytes
    assert.equal("output delivery failed: record of 2000001 bytes to grow.out: "
                 .. "Broker: Message size too large (producer message.max.bytes: 1000000)",
                 (env.header(dlq[1], "kafka_dlt-exception-message")))
    assert.equal(2, committed("grow.in"))
    assert.is_true(still_running(router), router:logtext():sub(-3000))
  end)

  it("truncates a DLQ copy with a huge error message, value first, and says so", function()
    ts.produce(addr, "loud.in", {{key = "l", value = ("v"):rep(990000)},
                                 {key = "l", value = "ok"}})
    local out = env.consume(addr, "loud.out", 1, 20000)
    assert.equal(1, #out)
    assert.equal("ok", out[1].value)
    local dlq = env.consume(addr, "loud.in.dlq", 1, 20000)
    assert.equal(1, #dlq)
    local d = dlq[1]
    assert.equal("value,message", (env.header(d, "kroute_dlt-truncated")))
    assert.equal("990000", (env.header(d, "kroute_dlt-original-value-size")))
    local msg = env.header(d, "kafka_dlt-exception-message")
    local orig = tonumber((env.header(d, "kroute_dlt-original-message-size")))
    assert.is_true(orig > 1200000, "original message size " .. tostring(orig))
    assert.is_true(#msg > 900000 and #msg < orig, "message of " .. #msg)
    assert.matches("^[^\n]*loud%.lua:2: EEEE", msg)
    assert.equal("", d.value)
    assert.matches("stack traceback", (env.header(d, "kafka_dlt-exception-stacktrace")))
    assert.equal("l", d.key)
    assert.equal(2, committed("loud.in"))
    assert.is_true(still_running(router), router:logtext():sub(-3000))
  end)

  it("keeps kroute replay from replaying a copy whose value was truncated", function()
    local code, out = env.run_cmd{"replay", "--brokers", addr, "--dry-run", "big.in.dlq"}
    assert.equal(0, code, out)
    assert.matches("would replay 0 of 1 record%(s%) from big.in.dlq to their original "
                   .. "topics; 1 skipped, 0 failed", out)
    assert.matches("value truncated in the DLQ", out)
    code, out = env.run_cmd{"replay", "--brokers", addr, "--dry-run", "grow.in.dlq"}
    assert.equal(0, code, out)
    assert.matches("would replay 1 of 1 record%(s%).*0 skipped", out)
  end)

  it("warns at load about a max_input above what the producer sends", function()
    local d = env.tmpdir()
    env.write(d .. "/h.lua", "return function(msg) return msg.value end\n")
    env.write(d .. "/r.yaml", [[
kafka:
  producer: { message.max.bytes: 2000000 }
routes:
  - name: fine
    match: a
    handler: h.lua
    max_input: 1MiB
  - name: large
    match: b
    handler: h.lua
    max_input: 2MiB
]])
    local code, text = env.run_cmd{"check", d}
    os.execute("rm -rf '" .. d .. "'")
    assert.equal(0, code, text) -- a warning, not an error: a big input may give a small output
    assert.matches(d:gsub("%p", "%%%0") .. "/r%.yaml:8:5: route 'large': max_input "
                   .. "%(2097152 bytes%) is more than the producer sends %(message%.max%.bytes "
                   .. "2000000", text)
    assert.is_nil(text:match("'fine'"))
  end)

  env.it_mock("moves on when the broker refuses an output and then its DLQ copy as too large",
     function()
    ts.produce(addr, "refused.in", {{key = "r", value = "slow"}})
    ts.sleep(300) -- the handler is busy for a second: its output comes next
    -- MSG_SIZE_TOO_LARGE for the next two Produce requests: the output,
    -- then the input's DLQ copy
    mc:request_errors(0, {10, 10})
    ts.sleep(3000)
    ts.produce(addr, "refused.in", {{key = "r", value = "later"}})
    local out = env.consume(addr, "refused.out", 1, 20000)
    local values = {}
    for _, r in ipairs(out) do values[#values + 1] = r.value end
    assert.same({"later"}, values)
    assert.equal(2, committed("refused.in"))
    assert.matches("route=refused topic=refused%.in partition=0 offset=0: DLQ copy to "
                   .. "refused%.in%.dlq %(5 bytes%) refused: Broker: Message size too large",
                   router:logtext())
    local _, body = env.http("GET", metrics_url)
    assert.matches('kroute_dlq_failures_total{route="refused"} 1\n', body, 1, true)
    assert.is_true(still_running(router), router:logtext():sub(-3000))
  end)

  it("restarts without exiting 1 or handling any of it again", function()
    local before = {}
    local topics = {"big.out", "big.in.dlq", "grow.out", "grow.in.dlq", "loud.out",
                    "loud.in.dlq", "refused.out"}
    for _, t in ipairs(topics) do before[t] = #env.consume(addr, t, 1, 5000) end
    router:stop_clean()
    router:cleanup()
    router = env.kroute(dir, addr)
    assert(router:wait_assigned(30000), router:logtext())
    ts.sleep(2000)
    assert.is_true(still_running(router), router:logtext():sub(-3000))
    for _, t in ipairs(topics) do
      assert.equal(before[t], #env.consume(addr, t, before[t], 5000), t)
    end
    for _, t in ipairs(INPUTS) do
      assert.equal(2, ts.committed(addr, "kroute", t)[0], t)
    end
    assert.is_nil(router:logtext():match("sent to DLQ"))
  end)
end)

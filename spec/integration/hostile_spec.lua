-- Hostile handlers end to end through the kroute binary and a `kroute
-- broker` child: a run stuck in a C call no hook can interrupt is abandoned
-- by the watchdog (its message dead-lettered with the timeout reason, its
-- worker replaced, /healthz saying so while the call lasts), a run that
-- keeps coroutine.running() cannot drive another message's run, and a
-- reload does not wait for a queue of slow runs.
local env = require "support.env"
local ts = env.ts

local function header(rec, name)
  for _, h in ipairs(rec.headers or {}) do
    if h[1] == name then return h[2] end
  end
end

describe("hostile handlers", function()
  local broker, router, dir, url

  setup(function()
    broker = env.broker{"wedge.in:1", "wedge.out:1", "hijack.in:1", "hijack.out:1",
                        "slow.in:1", "slow.out:1"}
    dir = env.tmpdir()
    env.write(dir .. "/routes.yaml", env.fast_kafka .. [[
routes:
  - name: wedge
    match: wedge.in
    handler: wedge.lua
    to: wedge.out
    timeout: 100ms
    memory: 512MiB
    max_input: 1KiB
  - name: hijack
    match: hijack.in
    handler: hijack.lua
    to: hijack.out
    retry: { attempts: 1 }
  - name: slow
    match: slow.in
    handler: slow.lua
    to: slow.out
    timeout: 1s
]])
    -- os.date walks its format in C: a 40 MB format takes seconds, and no
    -- count hook fires inside it
    env.write(dir .. "/wedge.lua", [[
return function(msg)
  if msg.value == "wedge" then return #os.date(("%Y"):rep(2e7)) end
  return "fine " .. msg.value
end
]])
    env.write(dir .. "/hijack.lua", [[
local kept
return function(msg)
  if msg.value == "keep" then kept = coroutine.running() return "kept" end
  local ok, err = coroutine.resume(kept, "forged")
  return tostring(ok) .. " " .. tostring(err)
end
]])
    env.write(dir .. "/slow.lua", [[
local kroute = require "kroute"
return function(msg)
  local t = kroute.now() + 200
  while kroute.now() < t do end
  return msg.value
end
]])
    router = env.kroute(dir, broker.addr)
    assert(router:wait_assigned(30000), router:logtext())
    url = router:admin_url()
  end)

  teardown(function()
    if router then
      -- SIGKILL: an abandoned run may still be executing, and a sanitizer
      -- build would report what it holds as a leak at exit
      router:kill()
      router:cleanup()
    end
    if broker then broker.stop() end
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("abandons a run stuck in a long C call, dead-letters it and replaces the worker", function()
    ts.produce(broker.addr, "wedge.in", {{key = "w", value = "wedge"}, {key = "a", value = "after"}})
    -- while the call lasts, /healthz says a worker is wedged
    local unhealthy = env.wait_for(function()
      local status, body = env.http("GET", url .. "/healthz", nil, 5)
      return status == 503 and body:match("wedged") and body
    end, 20000)
    assert.is_truthy(unhealthy, "healthz never reported the wedged worker:\n" .. router:logtext())
    assert.matches("route wedge", unhealthy)
    local dlq = env.consume(broker.addr, "wedge.in.dlq", 1, 30000)
    assert.equal(1, #dlq, router:logtext())
    assert.equal("wedge", dlq[1].value)
    assert.matches("^timeout: handler ran longer than 100 ms and could not be stopped",
                   header(dlq[1], "kafka_dlt-exception-message"))
    -- the message behind it ran in the replacement VM
    local out = env.consume(broker.addr, "wedge.out", 1, 30000)
    assert.equal("fine after", out[1] and out[1].value, router:logtext())
    assert.matches("worker replaced", router:logtext())
    -- and health comes back once the abandoned call has ended
    assert.is_truthy(env.wait_for(function()
      return env.http("GET", url .. "/healthz", nil, 5) == 200
    end, 60000), "healthz stayed unhealthy:\n" .. router:logtext())
    assert.is_nil(router:wait_exit(0), "kroute exited:\n" .. router:logtext())
  end)

  it("a kept run coroutine cannot be resumed by a later message's handler", function()
    ts.produce(broker.addr, "hijack.in", {{key = "k", value = "keep"}, {key = "h", value = "hijack"}})
    local dlq = env.consume(broker.addr, "hijack.in.dlq", 1, 30000)
    assert.equal(1, #dlq, router:logtext())
    assert.equal("hijack", dlq[1].value)
    assert.matches("only coroutines the handler created", header(dlq[1], "kafka_dlt-exception-message"))
    local out = env.consume(broker.addr, "hijack.out", 1, 30000)
    assert.equal("kept", out[1].value)
  end)

  it("a reload answers without waiting for the queued slow runs", function()
    local batch = {}
    for i = 1, 40 do batch[i] = {key = "s" .. i, value = tostring(i)} end
    ts.produce(broker.addr, "slow.in", batch)
    assert.is_truthy(env.wait_for(function()
      return router:logtext():match("route=slow") or #env.consume(broker.addr, "slow.out", 1, 100) > 0
    end, 20000))
    local t0 = ts.monotonic()
    local status, body = env.http("POST", url .. "/reload", nil, 60)
    local took = ts.monotonic() - t0
    assert.equal(200, status, body)
    -- 40 queued runs of 200 ms are 8 s; a reload that waited for them (or
    -- for a batch of them) would take seconds
    assert.is_true(took < 2000, ("POST /reload took %d ms"):format(took))
    local out = env.consume(broker.addr, "slow.out", 40, 60000)
    assert.equal(40, #out)
  end)
end)

-- Hostile handlers end to end through the kroute binary and a `kroute
-- broker` child: a run stuck in a C call no hook can interrupt is abandoned
-- by the watchdog (its message dead-lettered with the timeout reason, its
-- worker replaced, /healthz saying so while the call lasts), a run that
-- keeps coroutine.running() cannot drive another message's run, a reload
-- does not wait for a queue of slow runs, and one slow run does not hold
-- back the outputs of runs that finished before it. One worker thread, so
-- every run shares it.
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
                        "slow.in:1", "slow.out:1", "spread.in:1", "spread.out:1",
                        "stateful.in:1", "stateful.out:1"}
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
    ordering: none # every queued run goes to the worker in one batch
    timeout: 1s
  - name: spread
    match: spread.in
    handler: spread.lua
    to: spread.out
    ordering: none
    timeout: 5s
  - name: stateful
    match: stateful.in
    handler: stateful.lua
    to: stateful.out
    ordering: none
    timeout: 3s
]])
    env.write(dir .. "/stateful.lua", [[
local kroute = require "kroute"
local count = 0
return {
  init = function(prev) if prev then count = prev.count end end,
  reload_state = function() return {count = count} end,
  handle = function(msg)
    count = count + 1
    local t = kroute.now() + 600
    while kroute.now() < t do end
    return tostring(count)
  end,
}
]])
    env.write(dir .. "/spread.lua", [[
local kroute = require "kroute"
return function(msg)
  if msg.value == "slow" then
    local t = kroute.now() + 1500
    while kroute.now() < t do end
  end
  return msg.value
end
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
    router = env.kroute(dir, broker.addr, {args = {"--workers", "1"}})
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

  it("a slow run does not hold back the outputs of runs that finished before it", function()
    -- with ordering: none the three runs go to the one worker together, in
    -- offset order: "fast" is done long before "slow"
    ts.produce(broker.addr, "spread.in", {{key = "a", value = "fast"}, {key = "b", value = "slow"},
                                          {key = "c", value = "last"}})
    local out = env.consume(broker.addr, "spread.out", 3, 30000)
    assert.equal(3, #out, router:logtext())
    local at = {}
    for _, r in ipairs(out) do at[r.value] = r.timestamp end
    -- the output's CreateTime is when kroute produced it
    assert.is_true(at.slow - at.fast >= 1000,
                   ("fast produced %d ms before slow"):format(at.slow - at.fast))
  end)

  it("a reload that carries state over waits for no queued run, and the router keeps serving", function()
    local batch = {}
    for i = 1, 10 do batch[i] = {key = "s" .. i, value = tostring(i)} end
    ts.produce(broker.addr, "stateful.in", batch)
    -- the runs have begun (one or a few may be out by the time it reads) and
    -- most are still queued
    local first = env.consume(broker.addr, "stateful.out", 1, 30000)
    assert.is_true(#first >= 1 and #first < 10, router:logtext())
    local gen = router:reload_status().generation
    -- the POST waits for its reload; meanwhile the router answers at once
    local out = dir .. "/post.out"
    local curl = ts.spawn({"curl", "-s", "-m", "60", "-X", "POST", "-o", out, "-w", "%{http_code}",
                           url .. "/reload"}, {stdout = dir .. "/post.code"})
    for _ = 1, 5 do
      local t0 = ts.monotonic()
      local status = env.http("GET", url .. "/healthz", nil, 10)
      local took = ts.monotonic() - t0
      assert.equal(200, status)
      assert.is_true(took < 1000, ("GET /healthz took %d ms during the reload"):format(took))
    end
    assert.is_truthy(ts.wait(curl, 30000), "POST /reload never answered")
    assert.equal("200", env.read(dir .. "/post.code"))
    local body = require("kroute.native").json.decode(env.read(out))
    assert.equal(gen + 1, body.generation, env.read(out))
    assert.is_true(body.ok)
    -- ten queued runs of 600 ms each (they finish on the generation they
    -- started on); the next message runs on the new one, whose count went
    -- on from what reload_state() handed over (a fresh VM would say 1)
    local done = env.consume(broker.addr, "stateful.out", 10, 60000)
    assert.equal(10, #done)
    ts.produce(broker.addr, "stateful.in", {{key = "after", value = "after"}})
    local all = env.consume(broker.addr, "stateful.out", 11, 30000)
    local after
    for _, r in ipairs(all) do if r.key == "after" then after = tonumber(r.value) end end
    assert.is_true(after and after >= 2, "count after the reload: " .. tostring(after))
  end)
end)

-- Shutdown's exit status: a drain that finishes in time exits 0; one that
-- hits --drain-timeout (a handler still running) gives up, says how many
-- messages stay uncommitted, and exits 1 so a supervisor sees it.
local env = require "support.env"
local ts = env.ts

describe("shutdown", function()
  local broker, dir

  setup(function()
    broker = env.broker{"sd.in:1", "sd.out:1"}
    dir = env.tmpdir()
    env.write(dir .. "/r.yaml", env.fast_kafka .. [[
routes:
  - name: slow
    match: sd.in
    handler: slow.lua
    to: sd.out
    timeout: 120s
]])
    -- "busy" runs for a minute, well past the drain timeout; the rest echo
    env.write(dir .. "/slow.lua", [[
local kroute = require "kroute"
return function(msg)
  if msg.value == "busy" then
    kroute.log.info("busy handler started")
    local until_ms = kroute.now() + 60000
    while kroute.now() < until_ms do end
  end
  return msg.value
end
]])
  end)

  teardown(function()
    broker.stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("exits 1 and counts the messages left in flight when the drain times out", function()
    local r = env.kroute(dir, broker.addr, {args = {"--drain-timeout", "2s"}})
    assert.is_truthy(r:wait_assigned(30000), r:logtext())
    ts.produce(broker.addr, "sd.in", {{key = "k", value = "busy"}})
    assert.is_truthy(r:wait_log("busy handler started", 20000), r:logtext())
    local t0 = ts.monotonic()
    -- stops long before the handler would end on its own
    local code = r:stop(30000)
    local log = r:logtext()
    assert.equal(1, code, log)
    assert.is_true(ts.monotonic() - t0 < 30000)
    assert.matches("gave up after 2000 ms with 1 message%(s%) still in flight", log)
    assert.matches("will be redelivered", log)
    assert.is_nil(log:match("stopped cleanly"), log)
    r:cleanup()
    -- it was not committed: the next instance gets it again
    env.write(dir .. "/slow.lua", "return function(msg) return msg.value .. '|again' end\n")
    local r2 = env.kroute(dir, broker.addr)
    local out = env.consume(broker.addr, "sd.out", 1, 30000)
    r2:stop_clean()
    r2:cleanup()
    assert.equal("busy|again", out[#out] and out[#out].value, r2:logtext())
  end)

  it("exits 0 when the drain finishes within --drain-timeout", function()
    env.write(dir .. "/slow.lua", "return function(msg) return msg.value end\n")
    local r = env.kroute(dir, broker.addr, {args = {"--drain-timeout", "20s"}})
    assert.is_truthy(r:wait_assigned(30000), r:logtext())
    ts.produce(broker.addr, "sd.in", {{key = "k", value = "quick"}})
    assert.is_truthy(env.wait_for(function()
      for _, rec in ipairs(env.consume(broker.addr, "sd.out", 0, 1000)) do
        if rec.value == "quick" then return true end
      end
    end, 20000), r:logtext())
    r:stop_clean()
    assert.matches("stopped cleanly", r:logtext())
    r:cleanup()
  end)

  env.it_mock("commits what was delivered during a drain that gives up on a stuck output", function()
    -- sdd.stuck has no leader, so the output of "stuck" is never delivered;
    -- the broker answers 2 s late, so the outputs of "a" and "b" are
    -- delivered during the drain, after SIGTERM
    local b2 = env.broker({"sdd.in:1", "sdd.ok:1", "sdd.stuck:1"}, {in_process = true})
    local mc = b2.mock
    local d2 = env.tmpdir()
    finally(function() b2.stop(); os.execute("rm -rf '" .. d2 .. "'") end)
    env.write(d2 .. "/r.yaml", env.fast_kafka .. [[
routes:
  - name: split
    match: sdd.in
    handler: split.lua
]])
    env.write(d2 .. "/split.lua", [[
local kroute = require "kroute"
return function(msg)
  kroute.log.info("handled " .. msg.value)
  return kroute.record{topic = msg.value == "stuck" and "sdd.stuck" or "sdd.ok", value = msg.value}
end
]])
    assert(mc:set_leader("sdd.stuck", 0, -1))
    local r = env.kroute(d2, b2.addr, {args = {"--drain-timeout", "8s", "--group", "sdd"}})
    assert.is_truthy(r:wait_assigned(30000), r:logtext())
    assert(mc:rtt(1, 2000))
    ts.produce(b2.addr, "sdd.in", {{value = "a"}, {value = "b"}, {value = "stuck"}, {value = "c"}})
    assert.is_truthy(r:wait_log("handled c", 30000), r:logtext())
    ts.kill(r.pid, "TERM")
    ts.sleep(3000) -- the outputs of a, b and c are delivered by now
    assert(mc:rtt(1, 0))
    local code = r:wait_exit(30000)
    local log = r:logtext()
    r:cleanup()
    assert.equal(1, code, log)
    assert.matches("shutdown gave up with 1 output%(s%) undelivered", log)
    -- "a" and "b" were committed: the next instance starts at "stuck"
    assert(mc:set_leader("sdd.stuck", 0, 1))
    env.write(d2 .. "/split.lua", [[
local kroute = require "kroute"
return function(msg) return kroute.record{topic = "sdd.ok", value = msg.value .. "|again"} end
]])
    local r2 = env.kroute(d2, b2.addr, {args = {"--group", "sdd"}})
    local again = {}
    assert.is_truthy(env.wait_for(function()
      again = {}
      for _, rec in ipairs(env.consume(b2.addr, "sdd.ok", 0, 1000)) do
        if rec.value:match("|again$") then again[#again + 1] = rec.value end
      end
      return #again >= 2
    end, 30000), r2:logtext())
    r2:stop_clean()
    r2:cleanup()
    assert.same({"stuck|again", "c|again"}, again)
  end)

  it("refuses a --drain-timeout that is not a positive duration", function()
    for _, bad in ipairs{"0", "soon", "-1s", "2 weeks"} do
      local code, out = env.run_cmd({"run", "--drain-timeout", bad, dir}, 20000)
      assert.equal(2, code, bad .. ": " .. out)
      assert.matches("%-%-drain%-timeout", out)
    end
  end)
end)

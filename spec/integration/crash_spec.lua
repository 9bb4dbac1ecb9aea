-- At-least-once under SIGKILL: kroute is killed mid-stream and restarted;
-- every input event must reach the output (duplicates allowed, none lost),
-- and a graceful SIGTERM commits exactly what was delivered.
local env = require "support.env"
local ts = env.ts

local N = 20000
local PARTS = 8

local function route_file(dir)
  env.write(dir .. "/routes.yaml", env.fast_kafka .. [[
routes:
  - name: copy
    match: stream.in
    handler: copy.lua
    to: stream.out
]])
  env.write(dir .. "/copy.lua", [[
local kroute = require "kroute"
return function(msg)
  -- ~0.4 ms of work per event, so the kill lands in the middle of the stream
  -- (kroute.clock: wall time; os.clock counts every worker thread's CPU)
  local t = kroute.clock()
  while kroute.clock() - t < 0.0004 do end
  local ev = assert(msg:json())
  return { seq = ev.seq, key = msg.key, p = msg.partition }
end
]])
end

local function produce_range(addr, from, to)
  local batch = {}
  for i = from, to do
    batch[#batch + 1] = {key = "k" .. (i % 211), value = ('{"seq":%d}'):format(i)}
  end
  ts.produce(addr, "stream.in", batch)
end

-- distinct seqs seen in the output, and the total record count
local function seen(addr, min)
  local out = env.consume(addr, "stream.out", min, 30000)
  local set, distinct = {}, 0
  for _, r in ipairs(out) do
    local seq = tonumber(r.value:match('"seq":(%d+)'))
    if not set[seq] then set[seq] = true; distinct = distinct + 1 end
  end
  return set, distinct, #out
end

describe("at-least-once", function()
  local broker, dir

  setup(function()
    broker = env.broker{"stream.in:" .. PARTS, "stream.out:" .. PARTS}
    dir = env.tmpdir()
    route_file(dir)
  end)

  teardown(function()
    broker.stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("loses nothing when kroute is SIGKILLed mid-stream and restarted", function()
    produce_range(broker.addr, 1, N // 2)
    local r1 = env.kroute(dir, broker.addr)
    -- kill once some output has been produced, while the stream is flowing
    local hw = env.wait_for(function()
      local w = ts.high_watermarks(broker.addr, "stream.out")
      local total = 0
      for _, v in pairs(w or {}) do total = total + v end
      return total >= 2000 and total
    end, 40000)
    assert.is_truthy(hw, "no output before kill:\n" .. r1:logtext())
    r1:kill()
    assert.is_true(hw < N // 2, "the kill came after the stream was done")
    -- the rest of the stream arrives while kroute is down
    produce_range(broker.addr, N // 2 + 1, N)
    local r2 = env.kroute(dir, broker.addr)
    local set, distinct, total
    env.wait_for(function()
      set, distinct, total = seen(broker.addr, N)
      return distinct == N
    end, 90000)
    local code = r2:stop()
    r1:cleanup()
    r2:cleanup()
    local missing = {}
    for i = 1, N do if not set[i] then missing[#missing + 1] = i end end
    assert.same({}, {table.unpack(missing, 1, math.min(#missing, 20))})
    assert.equal(N, distinct)
    print(("# killed after %d outputs; %d outputs for %d inputs (%d duplicates)")
      :format(hw, total, N, total - N))
    assert.equal(0, code)
  end)

  it("commits delivered offsets while running and on SIGTERM", function()
    local r = env.kroute(dir, broker.addr)
    assert.is_truthy(r:wait_assigned(30000))
    produce_range(broker.addr, N + 1, N + 100)
    env.wait_for(function()
      local _, distinct = seen(broker.addr, 0)
      return distinct >= N + 100
    end, 30000)
    local hw = ts.high_watermarks(broker.addr, "stream.in")
    -- stored offsets are auto-committed every second while running
    local caught_up = env.wait_for(function()
      local c = ts.committed(broker.addr, "kroute", "stream.in")
      for p = 0, PARTS - 1 do if not c or c[p] ~= hw[p] then return false end end
      return true
    end, 15000)
    assert.is_true(caught_up, "offsets not committed while running")
    r:stop_clean()
    r:cleanup()
    local committed = ts.committed(broker.addr, "kroute", "stream.in")
    for p = 0, PARTS - 1 do
      assert.equal(hw[p], committed[p], "partition " .. p)
    end
  end)
end)

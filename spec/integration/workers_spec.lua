-- Worker threads that own their partitions (core/engine/pass.c): each
-- assigned partition's messages are consumed by one worker thread, the one
-- that runs them under `ordering: partition`, and the router steps in only
-- for a worker held up by a long run. Read through
-- kroute_messages_taken_total{thread}, the count of messages each thread
-- took from librdkafka.
local env = require "support.env"
local ts = env.ts

-- The worker thread a partition belongs to: core/engine/internal.h's
-- kr_partition_worker (FNV-1a of the topic, seeded by the partition).
local function partition_worker(topic, partition, workers)
  local h = partition
  for i = 1, #topic do
    h = ((h ~ topic:byte(i)) * 16777619) & 0xffffffff
  end
  return h % workers
end

describe("worker threads", function()
  local broker, dir

  setup(function()
    broker = env.broker{"own.in:8", "own.out:8", "cover.in:1", "cover.out:1"}
    dir = env.tmpdir()
    env.write(dir .. "/r.yaml", env.fast_kafka .. [[
routes:
  - name: own
    match: own.in
    handler: upper.lua
    to: own.out
  - name: cover
    match: cover.in
    handler: slow.lua
    to: cover.out
    ordering: none
    timeout: 20s
]])
    env.write(dir .. "/upper.lua", [[
return function(msg) return msg.value:upper() end
]])
    -- "slow" keeps its thread busy for 10 s (long enough for the rest to get
    -- through even under valgrind); anything else returns at once
    env.write(dir .. "/slow.lua", [[
local kroute = require "kroute"
return function(msg)
  if msg.value == "slow" then
    kroute.log.info("slow run started")
    local t = kroute.now() + 10000
    while kroute.now() < t do end
  end
  return msg.value
end
]])
  end)

  teardown(function()
    broker.stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("take their own partitions' messages, and only those", function()
    local r = env.kroute(dir, broker.addr, {args = {"--workers", "2"}})
    finally(function() r:stop(); r:cleanup() end)
    assert.is_truthy(r:wait_assigned(30000), r:logtext())
    local recs, mine = {}, {[0] = 0, [1] = 0}
    for i = 1, 400 do
      local p = i % 8
      recs[i] = {partition = p, key = "k" .. i, value = "v" .. i}
      local w = partition_worker("own.in", p, 2)
      mine[w] = mine[w] + 1
    end
    assert.is_true(mine[0] > 0 and mine[1] > 0, "the 8 partitions all map to one worker")
    ts.produce(broker.addr, "own.in", recs)
    local out = env.consume(broker.addr, "own.out", 400, 30000)
    assert.equal(400, #out)
    local samples
    assert.is_truthy(env.wait_for(function()
      samples = env.scrape(r:admin_url())
      local sum = 0
      for _, s in ipairs(samples.kroute_messages_taken_total or {}) do sum = sum + s.value end
      return sum == 400
    end, 15000))
    local taken = function(thread)
      return env.metric(samples, "kroute_messages_taken_total", {thread = thread})
    end
    -- each worker took messages, never more than its partitions had; the
    -- router takes only what a worker busy with a long run leaves
    for w = 0, 1 do
      local n = taken("kr-worker-" .. w)
      assert.is_true(n > 0 and n <= mine[w], ("kr-worker-%d took %d of its %d"):format(w, n, mine[w]))
    end
    assert.equal(400, taken("kr-worker-0") + taken("kr-worker-1") + taken("kroute"))
  end)

  it("leave a long run's queued messages to the router, for other threads to run", function()
    -- the first message of `ordering: none` runs on worker 0; with the
    -- one partition worker 0's too, the rest would wait behind it
    assert.equal(0, partition_worker("cover.in", 0, 2))
    local r = env.kroute(dir, broker.addr, {args = {"--workers", "2"}})
    finally(function() r:stop(); r:cleanup() end)
    assert.is_truthy(r:wait_assigned(30000), r:logtext())
    ts.produce(broker.addr, "cover.in", {{value = "slow"}})
    assert.is_truthy(r:wait_log("slow run started", 20000), r:logtext())
    local fast = {}
    for i = 1, 10 do fast[i] = {value = "fast" .. i} end
    ts.produce(broker.addr, "cover.in", fast)
    local out = env.consume(broker.addr, "cover.out", 11, 30000)
    assert.equal(11, #out)
    -- the ones another thread ran were produced while "slow" still ran
    local before = 0
    for _, rec in ipairs(out) do
      if rec.value == "slow" then break end
      before = before + 1
    end
    assert.is_true(before >= 1, "every fast message waited for the slow one")
    local samples = env.scrape(r:admin_url())
    assert.is_true(env.metric(samples, "kroute_messages_taken_total", {thread = "kroute"}) >= 1)
  end)
end)

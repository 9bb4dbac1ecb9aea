-- Real Apache Kafka only (KROUTE_TEST_BROKER=kafka): a 3-node KRaft cluster
-- with replication factor 3 and min.insync.replicas 2 under kroute. Broker
-- nodes are SIGKILLed and rolled while keyed events stream; kroute instances
-- scale 1 -> 3 -> 1 in one group; a topic created while kroute runs is
-- picked up by a glob route; a topic deleted and created again is read
-- from its new start. On the mock these are reported as pending.
local env = require "support.env"
local stream = require "support.stream"
local ts = env.ts

local PARTS = 6

-- A copy route from `input` to `output` that spends `busy` seconds per
-- event, so faults land while the stream is still flowing.
local function copy_route(dir, input, output, busy, extra)
  env.write(dir .. "/r.yaml", ([[
kafka:
  brokers: ${TEST_BROKERS}
  group: %s
  consumer: { fetch.wait.max.ms: 100, session.timeout.ms: 6000, heartbeat.interval.ms: 500,
              topic.metadata.refresh.interval.ms: 1000%s }
routes:
  - { name: copy, match: "%s", handler: copy.lua, to: %s }
]]):format(input:gsub("%W", "-") .. "-group", extra or "", input, output))
  env.write(dir .. "/copy.lua", ([[
local kroute = require "kroute"
return function(msg)
  local t = kroute.clock()
  while kroute.clock() - t < %s do end
  local ev = assert(msg:json())
  return { k = msg.key, s = ev.s }
end
]]):format(busy or 0))
  return dir
end

-- The lines of a kroute log that tell what its group did: assignments,
-- revokes, losses, commit trouble, and refetches skipped or taken in.
local function group_lines(logtext)
  local lines = {}
  for line in logtext:gmatch("[^\n]+") do
    if line:match("assigned") or line:match("revoked") or line:match("lost")
        or line:match("commit") or line:match("again") or line:match("went back") then
      lines[#lines + 1] = line
    end
  end
  return lines
end

-- The node (1..3) leading the most partitions of `topics`, not in `skip`.
local function busiest_node(addr, topics, skip)
  local count = {0, 0, 0}
  for _, t in ipairs(topics) do
    for _, leader in pairs(assert(ts.partition_leaders(addr, t))) do
      if count[leader] then count[leader] = count[leader] + 1 end
    end
  end
  local best
  for n = 1, 3 do
    if not (skip and skip[n]) and (not best or count[n] > count[best]) then best = n end
  end
  return best, count[best]
end

local function still_running(r) return ts.wait(r.pid, 0) == nil end

describe("a 3-node Kafka cluster", function()
  local broker, dir

  setup(function()
    if not env.real then return end
    broker = env.broker({"ha.in:" .. PARTS, "ha.out:" .. PARTS, "scale.in:12", "scale.out:12",
                         "copied.late:2"}, {nodes = 3})
    dir = env.tmpdir()
  end)

  teardown(function()
    if broker then broker.stop() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  env.it_real("loses nothing and keeps per-key order while nodes are killed and rolled", function()
    local r = env.kroute(copy_route(dir .. "/ha", "ha.in", "ha.out", 0.0005), broker.addr)
    assert.is_truthy(r:wait_assigned(60000), r:logtext())
    local CHUNK, sent, log = 5000, 0, {}
    local function send()
      stream.produce(broker.addr, "ha.in", sent + 1, sent + CHUNK, 300)
      sent = sent + CHUNK
    end
    send()
    -- each fault lands mid-stream: once kroute is through 40% of the last
    -- chunk, so outputs are in flight to the node that goes down
    local function midstream()
      local n
      assert.is_truthy(env.wait_for(function()
        n = stream.produced(broker.addr, "ha.out")
        return n >= sent - CHUNK * 3 // 5
      end, 60000), "kroute stalled:\n" .. r:logtext():sub(-3000))
      return n
    end
    -- twice: SIGKILL the node leading the most partitions, stream on, restart it
    local killed = {}
    for _ = 1, 2 do
      local node, leads = busiest_node(broker.addr, {"ha.in", "ha.out"}, killed)
      killed[node] = true
      -- (counted before the kill: while a partition's leader is dead and not
      -- yet replaced its watermarks cannot be read, the query times out)
      log[#log + 1] = ("kill node %d (led %d partitions) at %d outputs"):format(
        node, leads, midstream())
      broker.kill_node(node)
      send()
      ts.sleep(3000)
      broker.restart_node(node)
      send()
    end
    -- a rolling restart: each node in turn stopped gracefully and started again
    for node = 1, 3 do
      log[#log + 1] = ("rolled node %d at %d outputs"):format(node, midstream())
      broker.stop_node(node)
      send()
      broker.restart_node(node)
    end
    local distinct, total, violations, missing = stream.verify(broker.addr, "ha.out", sent,
                                                              180000)
    local running = still_running(r)
    local code = running and r:stop() or r:wait_exit(0)
    print(("# 3-node failover: %d events, %s; %d outputs, %d lost, %d duplicates, "
           .. "%d per-key order violations"):format(sent, table.concat(log, ", "), total,
                                                    #missing, total - distinct, violations))
    -- the whole log is kept for a post-mortem; the assertion shows its tail
    env.write(".build/test/cluster_failover.log", r:logtext())
    assert.is_true(running, "kroute exited during the failovers (whole log in "
      .. ".build/test/cluster_failover.log):\n" .. r:logtext():sub(-3000))
    assert.equal(0, code)
    r:cleanup()
    assert.same({}, {table.unpack(missing, 1, math.min(20, #missing))})
    assert.equal(sent, distinct)
    assert.equal(0, violations)
  end)

  env.it_real("scales 1 -> 3 -> 1 instances in one group under load: nothing lost", function()
    local d = copy_route(dir .. "/scale", "scale.in", "scale.out", 0.0002,
                         ", partition.assignment.strategy: cooperative-sticky")
    local CHUNK, sent = 4000, 0
    local function send()
      stream.produce(broker.addr, "scale.in", sent + 1, sent + CHUNK, 500)
      sent = sent + CHUNK
    end
    local members = {env.kroute(d, broker.addr)}
    assert.is_truthy(members[1]:wait_assigned(60000), members[1]:logtext())
    send()
    for i = 2, 3 do -- scale out while events flow
      members[i] = env.kroute(d, broker.addr)
      -- cooperative-sticky: a joining member's first assignment is empty, its
      -- partitions come in the second round, when the group has settled
      assert.is_truthy(members[i]:wait_log("assigned [1-9]%d* partition", 60000),
                       members[i]:logtext())
      send()
    end
    local group_log = {}
    local function keep_group_log(i)
      for _, line in ipairs(group_lines(members[i]:logtext())) do
        group_log[#group_log + 1] = ("member %d: %s"):format(i, line)
      end
    end
    local function assignments(r)
      local _, n = r:logtext():gsub("group=scale%-in%-group assigned", "")
      return n
    end
    for i = 3, 2, -1 do -- and back in, one at a time as a rolling scale-in does:
      -- each leave waits until the group has settled after the previous one
      local before = assignments(members[i - 1])
      members[i]:stop_clean()
      keep_group_log(i)
      members[i]:cleanup()
      assert.is_truthy(env.wait_for(function() return assignments(members[i - 1]) > before end,
                                    30000), members[i - 1]:logtext())
      send()
    end
    local distinct, total, violations, missing = stream.verify(broker.addr, "scale.out", sent,
                                                              120000)
    members[1]:stop_clean()
    assert.matches("assigned 12 partition", members[1]:logtext())
    keep_group_log(1)
    members[1]:cleanup()
    if total > distinct then print("# " .. table.concat(group_log, "\n# ")) end
    print(("# scale 1->3->1 (cooperative-sticky): %d events, %d outputs, %d lost, "
           .. "%d duplicates, %d per-key order violations"):format(
      sent, total, #missing, total - distinct, violations))
    assert.same({}, {table.unpack(missing, 1, math.min(20, #missing))})
    assert.equal(sent, distinct)
    -- each member commits before it hands partitions over, and real Kafka
    -- accepts those commits: 0 duplicates in every run measured. (A member
    -- stopped while the group is still rebalancing cannot commit with
    -- librdkafka 2.0.2, hence the waits above; the slack is for a commit
    -- lost to a coordinator hiccup, not for that.)
    assert.is_true(total - distinct <= 100, ("%d duplicates"):format(total - distinct))
  end)

  env.it_real("picks up a topic created while it runs with a glob route", function()
    local r = env.kroute(copy_route(dir .. "/late", "late.*", "copied.late"), broker.addr)
    assert.is_truthy(r:admin_url(30000), r:logtext())
    ts.sleep(2000) -- kroute is up and subscribed before the topic exists
    assert(broker.create_topic("late.created", 3))
    stream.produce(broker.addr, "late.created", 1, 300, 7)
    local distinct, _, violations, missing = stream.verify(broker.addr, "copied.late", 300, 60000)
    r:stop_clean()
    r:cleanup()
    assert.same({}, missing)
    assert.equal(300, distinct)
    assert.equal(0, violations)
  end)

  -- kroute skips what a partition delivers again below what it has read;
  -- a topic created again starts its offsets over, and those are new
  env.it_real("takes in a topic deleted and created again while it runs: nothing skipped",
              function()
    assert(broker.create_topic("again.in", 1))
    local r = env.kroute(copy_route(dir .. "/again", "again.in", "again.out"), broker.addr)
    assert.is_truthy(r:wait_log("assigned [1-9]", 60000), r:logtext())
    stream.produce(broker.addr, "again.in", 1, 300, 7)
    assert.equal(300, (stream.verify(broker.addr, "again.out", 300, 60000)))
    ts.sleep(1500) -- the offsets are committed (every second)
    assert(ts.delete_topics(broker.addr, {"again.in"}))
    local made, err -- (a deletion may still be settling on a node: try again)
    assert.is_truthy(env.wait_for(function()
      made, err = broker.create_topic("again.in", 1)
      return made
    end, 30000), err)
    stream.produce(broker.addr, "again.in", 301, 400, 7)
    local distinct, _, _, missing = stream.verify(broker.addr, "again.out", 400, 90000)
    local log = r:logtext()
    r:stop_clean()
    r:cleanup()
    for _, line in ipairs(group_lines(log)) do print("# " .. line) end -- what kroute saw
    assert.same({}, {table.unpack(missing, 1, math.min(20, #missing))}, log:sub(-3000))
    assert.equal(400, distinct)
  end)

  -- librdkafka 2.0.2 seen gone, the topic's partition revoked and assigned
  -- again: its rd_kafka_destroy then waited forever (the drain timer ended
  -- kroute with exit 1 after 25 s, every time)
  env.it_real("stops cleanly after a topic it read was deleted and created again", function()
    assert(broker.create_topic("gone.in", 1))
    local r = env.kroute(copy_route(dir .. "/gone", "gone.in", "gone.out"), broker.addr)
    assert.is_truthy(r:wait_log("assigned [1-9]", 60000), r:logtext())
    stream.produce(broker.addr, "gone.in", 1, 100, 7)
    assert.equal(100, (stream.verify(broker.addr, "gone.out", 100, 60000)))
    assert(ts.delete_topics(broker.addr, {"gone.in"}))
    assert.is_truthy(r:wait_log("revoked 1 partition", 30000), r:logtext())
    assert.is_truthy(env.wait_for(function() return (broker.create_topic("gone.in", 1)) end, 30000))
    assert.is_truthy(env.wait_for(function()
      local _, n = r:logtext():gsub("assigned 1 partition", "")
      return n >= 2
    end, 60000), r:logtext())
    local t0 = ts.monotonic()
    r:stop_clean()
    assert.is_true(ts.monotonic() - t0 < 20000, "the stop took the drain timeout")
    r:cleanup()
  end)
end)

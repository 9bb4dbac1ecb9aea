-- spec/bench/throughput_bench.lua - throughput figures, run by `make bench`.
-- On one broker, in one run: N payment events are preloaded, then each
-- configuration drains them in its own consumer group, in turn, for
-- ROUNDS rounds (round-robin, so a noisy moment hits every configuration):
--   (a) .build/bench-passthrough, a plain C librdkafka consume -> copy ->
--       produce loop with the same at-least-once discipline (the reference);
--   (b) kroute with a pass-through Lua handler;
--   (c) kroute with the seed's JSON transform (decode, amount*2, add a
--       field, encode, key by userId);
--   (d) kroute fanning each event out to 3 topics;
--   (e) the transform with --workers 1 and 2, ordering partition and key;
--   (n) the naive loop a user could write instead: the reference program
--       with spec/bench/naive_transform.lua (one thread, Lua 5.4, lua-cjson);
--   (h1, h2) a CPU-heavy handler (a checksum over the value, 20 times) on one
--       hot partition (HOT_N events in a topic of its own), --workers 2,
--       ordering partition against ordering key: what spreading one
--       partition's keys over the threads gains.
-- For each: the drain rate (first output to the N-th: the group join is
-- left out), CPU seconds per 100k events during the drain, and peak RSS,
-- each as a ratio to (a) of the same round. Then p50/p99 latency (input
-- CreateTime to output CreateTime) at a steady 5k events/s for (a) and (c).
package.path = "spec/?.lua;lua/?.lua;" .. package.path
package.cpath = ".build/lua/?.so;" .. package.cpath
local env = require "support.env"
local ts = env.ts
local json = require("kroute.native").json

local N = tonumber(os.getenv("BENCH_EVENTS") or "300000")
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "3")
local PARTS = 16 -- the mock keeps 5 MiB per partition: 16 hold 300k events
local HOT_N = 15000 -- what one partition holds
local bench = require "support.bench"
local proc_cpu, peak_rss_mib, median = bench.proc_cpu, bench.peak_rss_mib, bench.median

local function progress(msg) io.stderr:write("bench: ", msg, "\n") end

local broker = env.broker{"tp.in:" .. PARTS, "tp.out:" .. PARTS, "tp.f1:" .. PARTS,
                          "tp.f2:" .. PARTS, "tp.f3:" .. PARTS, "lat.in:" .. PARTS,
                          "lat.out:" .. PARTS, "hot.in:1", "hot.out:1"}
local dir = env.tmpdir()

local HANDLERS = {
  pass = "return function(msg) return msg.value end\n",
  transform = env.read("spec/bench/payment_transform.lua"),
  heavy = [[
return function(msg)
  local v, sum = msg.value, 0
  for _ = 1, 20 do
    for i = 1, #v do sum = (sum + v:byte(i)) % 65521 end
  end
  return msg.value
end
]],
  fanout = [[
local kroute = require "kroute"
return function(msg)
  return kroute.record{ topic = "tp.f1", value = msg.value },
         kroute.record{ topic = "tp.f2", value = msg.value },
         kroute.record{ topic = "tp.f3", value = msg.value }
end
]],
}

-- A route folder for one configuration.
local function route_dir(name, handler, ordering, input, output)
  local d = dir .. "/" .. name
  env.write(d .. "/h.lua", HANDLERS[handler])
  env.write(d .. "/r.yaml", env.fast_kafka .. ([[
routes:
  - name: bench
    match: %s
    handler: h.lua
    ordering: %s
%s]]):format(input, ordering, output and ("    to: " .. output .. "\n") or ""))
  return d
end

local CONFIGS = {
  {id = "a", name = "C librdkafka pass-through (reference)", ref = true},
  {id = "b", name = "kroute, pass-through handler", handler = "pass", workers = 2},
  {id = "c", name = "kroute, JSON transform", handler = "transform", workers = 2},
  {id = "d", name = "kroute, fan-out to 3 topics", handler = "fanout", workers = 2,
   outputs = {"tp.f1", "tp.f2", "tp.f3"}},
  {id = "e1", name = "transform, --workers 1, ordering partition", handler = "transform",
   workers = 1},
  {id = "e2", name = "transform, --workers 1, ordering key", handler = "transform",
   workers = 1, ordering = "key"},
  {id = "e3", name = "transform, --workers 2, ordering key", handler = "transform",
   workers = 2, ordering = "key"},
  {id = "n", name = "naive C + Lua 5.4 + lua-cjson loop, JSON transform",
   script = "spec/bench/naive_transform.lua"},
}

local HOT = {
  {id = "h1", name = "heavy handler, one hot partition, ordering partition",
   handler = "heavy", workers = 2, input = "hot.in", n = HOT_N},
  {id = "h2", name = "heavy handler, one hot partition, ordering key",
   handler = "heavy", workers = 2, ordering = "key", input = "hot.in", n = HOT_N},
}

local wm = assert(ts.watermarks(broker.addr))
local function total(topics)
  local n = 0
  for _, t in ipairs(type(topics) == "table" and topics or {topics}) do
    n = n + assert(wm:sum(t, t:match("^hot%.") and 1 or PARTS))
  end
  return n
end

-- Starts a configuration reading `input`; returns pid and a stop function.
local function start(cfg, group, input, output)
  if cfg.ref or cfg.script then
    return bench.start_reference(broker.addr, dir .. "/ref.log", group, input, output, cfg.script)
  end
  local d = route_dir(cfg.id .. "-" .. input, cfg.handler, cfg.ordering or "partition", input,
                      not cfg.outputs and output or nil)
  return bench.start_kroute(d, broker.addr, group, {"--workers", tostring(cfg.workers)})
end

-- Drains cfg.n events of cfg.input (N of tp.in unless given).
local function drain(cfg, round)
  local input, n = cfg.input or "tp.in", cfg.n or N
  local output = input:gsub("%.in$", ".out")
  local outputs = cfg.outputs or {output}
  local want = n * #outputs
  local base = total(outputs)
  local pid, stop = start(cfg, ("bench-%s-%d"):format(cfg.id, round), input, output)
  local t_first, cpu_first
  local t_start = ts.monotonic()
  while true do
    local done = total(outputs) - base
    if done > 0 and not t_first then t_first, cpu_first = ts.monotonic(), proc_cpu(pid) end
    if done >= want then break end
    assert(ts.monotonic() - (t_first or ts.monotonic()) < 300000, cfg.name .. ": no drain")
    assert(t_first or ts.monotonic() - t_start < 120000, cfg.name .. ": nothing came out in 120 s")
    ts.sleep(t_first and 10 or 2)
  end
  local secs = (ts.monotonic() - t_first) / 1000
  local res = {rate = n / secs, cpu = (proc_cpu(pid) - cpu_first) / n * 100000,
               rss = peak_rss_mib(pid)}
  stop()
  return res
end

local seq = 0 -- across runs: every latency event is told apart by its seq
local function latency(cfg)
  local RATE, SECONDS = 5000, 4
  local pid, stop = start(cfg, "bench-lat-" .. cfg.id, "lat.in", "lat.out")
  -- warm up: one event every 100 ms until one comes out (the group joined)
  local base = total("lat.out")
  local t_warm = ts.monotonic()
  while total("lat.out") == base do
    assert(ts.monotonic() - t_warm < 60000, cfg.name .. ": nothing came out")
    seq = seq + 1
    ts.produce(broker.addr, "lat.in", {{key = "w", value = json.encode{seq = seq, userId = "w",
                                                                        amount = 1}}})
    ts.sleep(100)
  end
  ts.sleep(500)
  base = total("lat.out")
  local first = seq + 1
  local unsure = {}
  local t0 = ts.monotonic()
  while ts.monotonic() - t0 < SECONDS * 1000 do
    local batch = {}
    for _ = 1, RATE // 100 do
      seq = seq + 1
      batch[#batch + 1] = {key = "u" .. seq % 1000, value = json.encode{
        seq = seq, userId = "u" .. seq % 1000, amount = 1500, concertId = "c1"}}
    end
    -- each call is a new client: now and then its start-up takes a second,
    -- and then the events' CreateTime says nothing about when they arrived
    local tp = ts.monotonic()
    ts.produce(broker.addr, "lat.in", batch)
    if ts.monotonic() - tp > 50 then
      for s = seq - #batch + 1, seq do unsure[s] = true end
    end
    local next_at = t0 + (seq - first + 1) * 1000 // RATE
    if next_at > ts.monotonic() then ts.sleep(next_at - ts.monotonic()) end
  end
  local inputs, outs = {}, {}
  local recs = env.consume(broker.addr, "lat.out", base + seq - first + 1, 30000)
  for _, rec in ipairs(env.consume(broker.addr, "lat.in", 0, 10000)) do
    inputs[json.decode(rec.value).seq] = rec.timestamp
  end
  for _, rec in ipairs(recs) do
    local s = json.decode(rec.value).seq
    if s >= first and inputs[s] and not outs[s] and not unsure[s] then
      outs[s] = rec.timestamp - inputs[s]
    end
  end
  stop()
  local lat = {}
  for _, v in pairs(outs) do lat[#lat + 1] = v end
  table.sort(lat)
  local left_out = 0
  for _ in pairs(unsure) do left_out = left_out + 1 end
  return lat[math.max(1, #lat // 2)], lat[math.max(1, math.ceil(#lat * 0.99))], #lat, left_out
end

-- Preloads n payment events into `topic` (paymentId prefix: `prefix`).
local function preload(topic, n, prefix)
  local batch = {}
  for s = 1, n do
    local user = "u" .. s % 5000
    batch[#batch + 1] = {key = user, value = json.encode{
      paymentId = ("%s%08d"):format(prefix, s), userId = user, concertId = "c" .. s % 20,
      seat = "A-" .. s % 300, amount = 1000 + s % 9000, status = "COMPLETED"}}
    -- (one producer per call: few, large calls; a real broker takes ~0.5 s to set one up)
    if #batch == 20000 or s == n then ts.produce(broker.addr, topic, batch); batch = {} end
  end
end

progress(("preloading %d payment events into %d partitions"):format(N, PARTS))
preload("tp.in", N, "p")
assert(total("tp.in") == N, "the broker did not keep every event: raise PARTS")
preload("hot.in", HOT_N, "h")
assert(total("hot.in") == HOT_N, "the broker did not keep every event: lower HOT_N")

local results = {} -- results[id][round]
for round = 1, ROUNDS do
  for _, configs in ipairs{CONFIGS, HOT} do
    for _, cfg in ipairs(configs) do
      local res = drain(cfg, round)
      results[cfg.id] = results[cfg.id] or {}
      results[cfg.id][round] = res
      progress(("round %d %-46s %9.0f events/s  %.2f CPU-s/100k  %5.1f MiB"):format(
        round, cfg.name, res.rate, res.cpu, res.rss))
    end
  end
end

local load1 = env.read("/proc/loadavg"):match("^(%S+)")
print(("throughput on %s: %d events, %d rounds, %d partitions, machine load %s (1 min avg), %d cores")
  :format(env.real and "Apache Kafka (1 node)" or "the mock broker", N, ROUNDS, PARTS, load1, tonumber(io.popen("nproc"):read("a")) or 0))
bench.print_drain_table(CONFIGS, results, ROUNDS, "a", "ref")
print("(medians over the rounds; each ratio is to the reference of the same round)")
do -- the issue-14 targets: the transform against the naive loop, same rounds
  local drain, cpu = {}, {}
  for round = 1, ROUNDS do
    local c, n = results.c[round], results.n[round]
    drain[#drain + 1] = c.rate / n.rate
    cpu[#cpu + 1] = c.cpu / n.cpu
  end
  print(("kroute JSON transform (c) against the naive loop (n), same rounds: drain %.2fx, "
         .. "CPU per event %.2fx (medians)"):format(median(drain), median(cpu)))
end
do -- one hot partition: ordering key (h2) against ordering partition (h1)
  local rate, drain, cpu = {}, {}, {}
  for round = 1, ROUNDS do
    local h1, h2 = results.h1[round], results.h2[round]
    rate[#rate + 1] = h1.rate
    drain[#drain + 1] = h2.rate / h1.rate
    cpu[#cpu + 1] = h2.cpu / h1.cpu
  end
  print(("a CPU-heavy handler on one hot partition (%d events), --workers 2: ordering key "
         .. "(h2) against ordering partition (h1, %.0f events/s), same rounds: drain %.2fx, "
         .. "CPU per event %.2fx (medians)"):format(HOT_N, median(rate), median(drain),
                                                     median(cpu)))
end

local ref50, ref99, refn, refout = latency(CONFIGS[1])
local k50, k99, kn, kout = latency(CONFIGS[3])
print(("latency at 5,000 events/s, input CreateTime -> output CreateTime: reference p50 %d ms "
       .. "p99 %d ms (%d events); kroute JSON transform p50 %d ms p99 %d ms (%d events); "
       .. "left out: %d and %d events whose own produce call took over 50 ms")
  :format(ref50, ref99, refn, k50, k99, kn, refout, kout))
broker.stop()
os.execute("rm -rf '" .. dir .. "'")

-- spec/bench/backlog_bench.lua - peak memory and drain rate of a big
-- backlog, run by `make bench` (mock broker): BENCH_BACKLOG_EVENTS (600k)
-- payment events preloaded into 32 partitions, drained by the JSON
-- transform with the in-flight budget at its default, smaller (which sizes
-- librdkafka's prefetch too), and smaller with librdkafka's prefetch left at
-- its own 64 MiB (as before kroute sized it), and by the naive C + Lua +
-- lua-cjson loop (passthrough.c with naive_transform.lua) in the same
-- rounds. Reported: drain rate (first output to last), CPU seconds per
-- 100k events, peak RSS, and the rate and CPU as ratios to the naive loop
-- of the same round. Not a test: nothing is asserted.
package.path = "spec/?.lua;lua/?.lua;" .. package.path
package.cpath = ".build/lua/?.so;" .. package.cpath
local env = require "support.env"
local stream = require "support.stream"
local ts = env.ts
local json = require("kroute.native").json

local N = tonumber(os.getenv("BENCH_BACKLOG_EVENTS") or "600000")
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "2")
local PARTS = 32 -- the mock keeps 5 MiB per partition
local bench = require "support.bench"

local broker = env.broker{"bl.in:" .. PARTS, "bl.out:" .. PARTS}
local dir = env.tmpdir()

local CONFIGS = {
  {id = "n", name = "naive C + Lua 5.4 + lua-cjson loop", naive = true},
  {id = "k", name = "kroute, --max-inflight 64MiB (default)"},
  {id = "s", name = "kroute, --max-inflight 16MiB", budget = "16MiB"},
  {id = "q", name = "kroute, --max-inflight 16MiB, queued.max.messages.kbytes: 65536",
   budget = "16MiB", props = "queued.max.messages.kbytes: 65536"},
}

local function route_dir(cfg)
  local d = dir .. "/" .. cfg.id
  local kafka = env.fast_kafka
  if cfg.props then
    kafka = kafka:gsub("topic%.metadata%.refresh%.interval%.ms: 1000",
                       "%0, " .. cfg.props)
  end
  env.write(d .. "/h.lua", env.read("spec/bench/payment_transform.lua"))
  env.write(d .. "/r.yaml", kafka .. [[
routes:
  - name: transform
    match: bl.in
    handler: h.lua
    to: bl.out
]])
  return d
end

local function start(cfg, group)
  if cfg.naive then
    return bench.start_reference(broker.addr, dir .. "/ref.log", group, "bl.in", "bl.out",
                                 "spec/bench/naive_transform.lua")
  end
  local args = {"--workers", "2"}
  if cfg.budget then args[#args + 1] = "--max-inflight"; args[#args + 1] = cfg.budget end
  return bench.start_kroute(route_dir(cfg), broker.addr, group, args)
end

local function drain(cfg, round)
  local base = stream.produced(broker.addr, "bl.out")
  local pid, stop = start(cfg, ("backlog-%s-%d"):format(cfg.id, round))
  local t0, c0
  local t_start = ts.monotonic()
  while true do
    local done = stream.produced(broker.addr, "bl.out") - base
    if done > 0 and not t0 then t0, c0 = ts.monotonic(), bench.proc_cpu(pid) end
    if done >= N then break end
    assert(t0 or ts.monotonic() - t_start < 120000, cfg.name .. ": nothing came out in 120 s")
    assert(not t0 or ts.monotonic() - t0 < 300000, cfg.name .. ": no drain")
    ts.sleep(t0 and 10 or 2)
  end
  local res = {rate = N / ((ts.monotonic() - t0) / 1000),
               cpu = (bench.proc_cpu(pid) - c0) / N * 100000, rss = bench.peak_rss_mib(pid)}
  stop()
  return res
end

io.stderr:write(("bench: preloading %d events into %d partitions\n"):format(N, PARTS))
local batch = {}
for i = 1, N do
  local user = "u" .. i % 5000
  batch[#batch + 1] = {key = user, value = json.encode{paymentId = "p" .. i, userId = user,
                       concertId = "c" .. i % 40, seat = "A-" .. i % 300, amount = 15000 + i % 7,
                       status = "COMPLETED"}}
  if #batch == 20000 then ts.produce(broker.addr, "bl.in", batch); batch = {} end
end
if #batch > 0 then ts.produce(broker.addr, "bl.in", batch) end

local results = {}
for round = 1, ROUNDS do
  for _, cfg in ipairs(CONFIGS) do
    results[cfg.id] = results[cfg.id] or {}
    results[cfg.id][round] = drain(cfg, round)
    io.stderr:write(("bench: backlog round %d %s: %.0f events/s\n"):format(round, cfg.id,
                                                                         results[cfg.id][round].rate))
  end
end
broker.stop()

print(("backlog drain on the mock broker: %d events in %d partitions, %d rounds, machine load %s")
  :format(N, PARTS, ROUNDS, env.read("/proc/loadavg"):match("^(%S+)")))
bench.print_drain_table(CONFIGS, results, ROUNDS, "n", "naive")

-- spec/bench/request_bench.lua - request/reply figures, run by `make bench`.
-- In one run, on one broker:
--   1. NestJS ClientKafka -> kroute responder vs -> NestJS responder:
--      sequential round trips (p50/p99), the rate with 50 calls always in
--      flight, and the drain rate of a backlog of requests written before
--      the responder starts;
--   2. kroute -> kroute with kroute.request: sequential p50/p99 (one
--      partition, one request at a time) and throughput (16 partitions).
-- Figures are printed as a table and as ratios between the two responders.
package.path = "spec/?.lua;lua/?.lua;" .. package.path
package.cpath = ".build/lua/?.so;" .. package.cpath
local env = require "support.env"
local ts = env.ts
local json = require("kroute.native").json

local SEQ_N = tonumber(os.getenv("BENCH_SEQ_N") or "500")
local BACKLOG_N = tonumber(os.getenv("BENCH_BACKLOG_N") or "10000")
local CALLS_N = tonumber(os.getenv("BENCH_CALLS_N") or "10000")
local INFLIGHT_N = tonumber(os.getenv("BENCH_INFLIGHT_N") or "5000")
local nest = require "support.nest"

local function progress(msg) io.stderr:write("bench: ", msg, "\n") end

local node, json_lines = nest.node, nest.json_lines

nest.install()

local topics = nest.client_topics(8, 4)
-- (print: the EventPattern of math-service.js)
for _, t in ipairs{"print:4", "calls.seq:1", "calls.par:16", "results:4"} do topics[#topics + 1] = t end
local broker = env.broker(topics)
-- kroute runs with its default settings, but for one: the mock broker does
-- not end a waiting fetch when a record arrives, so there a fetch waits its
-- whole fetch.wait.max.ms (kroute's default 100 ms) and sets the round
-- trip; the NestJS apps wait at most 10 ms (maxWaitTimeInMs), and so does
-- kroute on the mock. Real Kafka answers a waiting fetch at once.
local route_env = {BENCH_FETCH_WAIT_MS = env.real and "100" or "10"}
local dir = env.tmpdir()
local results = {}

-- A responder: kroute on spec/bench/echo.yaml, or NestJS's math-service.
local function start_responder(kind, group)
  if kind == "kroute" then
    local r = env.kroute("spec/bench/echo.yaml", broker.addr, {env = route_env})
    assert(r:wait_assigned(30000), r:logtext())
    return function() r:stop(); r:cleanup() end
  end
  local log = dir .. "/nest-" .. group
  local pid = node("math-service.js", {"--brokers", broker.addr, "--group", group,
                                       "--from-beginning"}, log)
  assert(env.wait_for(function() return env.read(log .. ".out"):match("READY") end, 60000),
         env.read(log .. ".err"))
  return function() ts.kill(pid, "TERM"); ts.wait(pid, 20000) end
end

local function client(scenario, n, group, log)
  return node("client.js", {"--brokers", broker.addr, "--scenario", scenario, "--n",
                            tostring(n), "--group", group, "--timeout", "300000",
                            "--inflight", "50"}, log)
end

local function finish(pid, log)
  assert(ts.wait(pid, 600000), "client did not finish")
  local res = json_lines(log .. ".out")[1]
  assert(res, env.read(log .. ".err"))
  return res
end

local only = os.getenv("BENCH_ONLY")
for _, kind in ipairs(only == "calls" and {} or {"kroute", "nestjs"}) do
  -- (a) sequential round trips against a running responder
  progress(kind .. ": sequential round trips (" .. SEQ_N .. ")")
  local stop = start_responder(kind, "bench-" .. kind)
  local log = dir .. "/seq-" .. kind
  local seq = finish(client("seq", SEQ_N, "bench-c-seq-" .. kind, log), log)
  -- (b) 50 calls in flight at all times
  progress(kind .. ": " .. INFLIGHT_N .. " calls, 50 in flight")
  log = dir .. "/inflight-" .. kind
  local inflight = finish(client("inflight", INFLIGHT_N, "bench-c-if-" .. kind, log), log)
  stop()
  -- (c) a backlog written while no responder runs, then drained
  progress(kind .. ": backlog of " .. BACKLOG_N .. " requests")
  log = dir .. "/backlog-" .. kind
  local pid = client("backlog", BACKLOG_N, "bench-c-bl-" .. kind, log)
  assert(env.wait_for(function()
    return env.read(log .. ".err"):match("backlog produced")
  end, 120000), env.read(log .. ".err"))
  stop = start_responder(kind, "bench-" .. kind)
  local backlog = finish(pid, log)
  stop()
  progress(kind .. ": " .. json.encode(seq) .. " " .. json.encode(inflight) .. " "
           .. json.encode(backlog))
  results[kind] = {seq = seq, inflight = inflight, backlog = backlog}
end

-- (d) kroute -> kroute through kroute.request
progress("kroute -> kroute: " .. CALLS_N .. " requests")
local r = env.kroute("spec/bench/calls.yaml", broker.addr, {env = route_env})
assert(r:wait_log("group=kroute%-client assigned", 30000), r:logtext())
assert(r:wait_log("group=kroute assigned", 30000), r:logtext())
local function feed(topic, n)
  local batch = {}
  for i = 1, n do batch[#batch + 1] = {key = tostring(i), value = tostring(i)} end
  ts.produce(broker.addr, topic, batch)
end
feed("calls.seq", SEQ_N)
local seq_out = env.consume(broker.addr, "results", SEQ_N, 300000)
feed("calls.par", CALLS_N)
local all = env.consume(broker.addr, "results", SEQ_N + CALLS_N, 300000)
r:stop()
r:cleanup()
local lat, first, last, bad = {}, nil, nil, 0
for _, rec in ipairs(seq_out) do lat[#lat + 1] = json.decode(rec.value).ms end
table.sort(lat)
local par = {}
for _, rec in ipairs(all) do
  local v = json.decode(rec.value)
  par[#par + 1] = v
end
table.sort(par, function(a, b) return a.at < b.at end)
for i = SEQ_N + 1, #par do
  local v = par[i]
  if not v.ok then bad = bad + 1 end
  first = first or v.at
  last = v.at
end
local function pct(t, p) return t[math.max(1, math.ceil(#t * p))] end

if only == "calls" then
  print(("kroute -> kroute: p50 %.2f ms, p99 %.2f ms; %d in %.2f s"):format(
    pct(lat, 0.5), pct(lat, 0.99), CALLS_N, (last - first) / 1000))
  os.exit(0)
end
local k, n = results.kroute, results.nestjs
local function num(v) return type(v) == "number" and v or 0 / 0 end
for _, x in ipairs{k, n} do x.backlog.drain_per_s = num(x.backlog.drain_per_s) end
local lines = {
  ("request/reply benchmark (%s broker, one run; NestJS ClientKafka drives both responders)")
    :format(env.real and "Apache Kafka" or "mock"),
  ("%-44s %12s %12s"):format("", "kroute", "NestJS"),
  ("%-44s %12.2f %12.2f"):format("sequential round trip p50 (ms)", k.seq.p50_ms, n.seq.p50_ms),
  ("%-44s %12.2f %12.2f"):format("sequential round trip p99 (ms)", k.seq.p99_ms, n.seq.p99_ms),
  ("%-44s %12.0f %12.0f"):format("50 calls in flight, replies/s",
                                 num(k.inflight.replies_per_s), num(n.inflight.replies_per_s)),
  ("%-44s %12.2f %12.2f"):format("50 calls in flight, round trip p50 (ms)",
                                 num(k.inflight.p50_ms), num(n.inflight.p50_ms)),
  ("%-44s %12.0f %12.0f"):format("backlog drain, replies/s (" .. BACKLOG_N .. " requests)",
                                 k.backlog.drain_per_s or 0, n.backlog.drain_per_s or 0),
  ("kroute p50 over NestJS p50: %+.2f ms; 50 in flight: kroute %.2fx NestJS; backlog drain: "
    .. "kroute %.1fx NestJS")
    :format(k.seq.p50_ms - n.seq.p50_ms,
            num(k.inflight.replies_per_s) / num(n.inflight.replies_per_s),
            (k.backlog.drain_per_s or 0) / (n.backlog.drain_per_s or 1)),
  ("kroute -> kroute (kroute.request): p50 %.2f ms, p99 %.2f ms sequential; %d requests "
    .. "over 16 partitions in %.2f s = %.0f/s (%d failed)")
    :format(pct(lat, 0.5), pct(lat, 0.99), CALLS_N, (last - first) / 1000,
            CALLS_N / math.max((last - first) / 1000, 0.001), bad),
}
print(table.concat(lines, "\n"))
broker.stop()
os.execute("rm -rf '" .. dir .. "'")

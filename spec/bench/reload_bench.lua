-- spec/bench/reload_bench.lua - hot reload figures, run by `make bench`.
-- With 100 routes served by one kroute on one broker:
--   1. reload latency: from a handler file written (renamed over) to the
--      new generation serving (its "generation N live" log line), p50/max;
--   2. throughput dip: the drain rate of a preloaded backlog with no
--      reload, then again (a second group) with a SIGHUP every 200 ms;
--      reported as a ratio, plus the slowest 100 ms window of each run
--      against its median window.
package.path = "spec/?.lua;lua/?.lua;" .. package.path
package.cpath = ".build/lua/?.so;" .. package.cpath
local env = require "support.env"
local ts = env.ts

local ROUTES = 100
local RELOADS = tonumber(os.getenv("BENCH_RELOADS") or "20")
local N = tonumber(os.getenv("BENCH_RELOAD_EVENTS") or "1000000")

local function progress(msg) io.stderr:write("bench: ", msg, "\n") end

local topics = {"rb.in:32", "rb.out:32"} -- 32: the mock keeps 5 MiB per partition
for i = 1, ROUTES - 1 do topics[#topics + 1] = "rb.r" .. i .. ":1" end
local broker = env.broker(topics)
local dir = env.tmpdir()

local function save(path, text)
  env.write(path .. ".tmp~", text)
  assert(os.rename(path .. ".tmp~", path))
end

local yaml = {env.fast_kafka, "routes:\n"}
for i = 0, ROUTES - 1 do
  yaml[#yaml + 1] = ("  - name: r%d\n    match: %s\n    handler: %s\n    to: rb.out\n")
    :format(i, i == 0 and "rb.in" or "rb.r" .. i, i == 0 and "tag.lua" or "copy.lua")
end
env.write(dir .. "/routes.yaml", table.concat(yaml))
env.write(dir .. "/copy.lua", "return function(msg) return msg.value end\n")
local function tag(n) return ('return function(msg) return msg.value .. "|%d" end\n'):format(n) end
save(dir .. "/tag.lua", tag(0))

local function total(topic)
  local n = 0
  for _, v in pairs(ts.high_watermarks(broker.addr, topic) or {}) do n = n + v end
  return n
end

-- 1. latency from the write to the new generation serving
local r = env.kroute(dir, broker.addr, {args = {"--group", "bench-latency"}})
assert(r:wait_assigned(60000), r:logtext())
local lat = {}
for i = 1, RELOADS do
  local want = ("generation %d live"):format(i + 1)
  local t0 = ts.monotonic()
  save(dir .. "/tag.lua", tag(i))
  while not r:logtext():find(want, 1, true) do
    assert(ts.monotonic() - t0 < 10000, "no reload after 10 s:\n" .. r:logtext():sub(-2000))
    ts.sleep(1)
  end
  lat[#lat + 1] = ts.monotonic() - t0
  ts.sleep(100)
end
local built = {}
for ms in r:logtext():gmatch("generation %d+ live %(%d+ route%(s%), built in (%d+) ms%)") do
  built[#built + 1] = tonumber(ms)
end
r:stop()
r:cleanup()
table.sort(lat)
table.sort(built)
progress(("reload latency over %d reloads of %d routes: p50 %d ms, max %d ms"):format(
  #lat, ROUTES, lat[(#lat + 1) // 2], lat[#lat]))

-- 2. throughput with and without reloads, on the same backlog
progress(("preloading %d events"):format(N))
local batch = {}
for s = 1, N do
  batch[#batch + 1] = {key = "k" .. s % 1000, value = ("%08d"):format(s)}
  if #batch == 2000 or s == N then ts.produce(broker.addr, "rb.in", batch); batch = {} end
end
assert(total("rb.in") == N, "the broker did not keep every event")

local function drain(group, reload_every_ms)
  local base = total("rb.out")
  local k = env.kroute(dir, broker.addr, {args = {"--group", group}})
  local samples, first, last_reload, reloads = {}, nil, 0, 0
  while true do
    local now, done = ts.monotonic(), total("rb.out") - base
    if done > 0 then
      first = first or now
      samples[#samples + 1] = {now, done}
      if reload_every_ms and now - last_reload >= reload_every_ms and done < N then
        ts.kill(k.pid, "HUP")
        last_reload, reloads = now, reloads + 1
      end
    end
    if done >= N then break end
    assert(now - (first or now) < 300000, "drain did not finish")
    ts.sleep(100)
  end
  local secs = (samples[#samples][1] - first) / 1000
  local rates = {}
  for i = 2, #samples - 1 do -- the last window is a partial one
    rates[#rates + 1] = (samples[i][2] - samples[i - 1][2]) / (samples[i][1] - samples[i - 1][1])
  end
  table.sort(rates)
  k:stop()
  k:cleanup()
  return N / secs, rates[1] or 0, rates[(#rates + 1) // 2] or 0, reloads
end

local steady, steady_min, steady_med = drain("bench-steady")
progress(("no reload: %.0f events/s"):format(steady))
local with, with_min, with_med, reloads = drain("bench-reloading", 200)
progress(("%d reloads: %.0f events/s"):format(reloads, with))

print(("| %-44s | %12s |"):format("measure (" .. ROUTES .. " routes)", "figure"))
print(("|%s|%s|"):format(("-"):rep(46), ("-"):rep(14)))
local function row(name, fig) print(("| %-44s | %12s |"):format(name, fig)) end
row("write -> new generation serving, p50", lat[(#lat + 1) // 2] .. " ms")
row("write -> new generation serving, max", lat[#lat] .. " ms")
row("build of the generation (log), p50", (built[(#built + 1) // 2] or "?") .. " ms")
row("drain rate, no reload", ("%.0f/s"):format(steady))
row(("drain rate, %d reloads (one per 200 ms)"):format(reloads), ("%.0f/s"):format(with))
row("ratio reloading / steady", ("%.2f"):format(with / steady))
row("slowest 100 ms window / median, steady", ("%.2f"):format(steady_min / steady_med))
row("slowest 100 ms window / median, reloading", ("%.2f"):format(with_min / with_med))
broker.stop()
os.execute("rm -rf '" .. dir .. "'")

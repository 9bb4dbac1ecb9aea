-- spec/bench/memory_bench.lua - kroute's memory over a long run, run by
-- `make bench`. A producer child streams BENCH_LONG_EVENTS (10M) payment
-- events at a steady rate while kroute runs the JSON transform on them;
-- kroute's RSS is sampled every second. Reported: RSS once the first 1M
-- events are through (warm), at the end, the growth between the two, and
-- kroute's Lua memory from /metrics. Not a test: nothing is asserted.
package.path = "spec/?.lua;lua/?.lua;" .. package.path
package.cpath = ".build/lua/?.so;" .. package.cpath
local env = require "support.env"
local ts = env.ts

local N = tonumber(os.getenv("BENCH_LONG_EVENTS") or "10000000")
local RATE = tonumber(os.getenv("BENCH_LONG_RATE") or "200000") -- events/s
local PARTS = 16

local function progress(msg) io.stderr:write("bench: ", msg, "\n") end

local broker = env.broker{"mem.in:" .. PARTS, "mem.out:" .. PARTS}
local dir = env.tmpdir()
env.write(dir .. "/h.lua", env.read("spec/bench/payment_transform.lua"))
env.write(dir .. "/r.yaml", env.fast_kafka .. [[
routes:
  - name: transform
    match: mem.in
    handler: h.lua
    to: mem.out
]])
-- the producer: its own process, so kroute's drain and the feed overlap
env.write(dir .. "/feed.lua", ([[
package.path = "spec/?.lua;lua/?.lua;" .. package.path
package.cpath = ".build/lua/?.so;" .. package.cpath
local ts = require("kroute.testsupport")
local json = require("kroute.native").json
local N, RATE, addr = %d, %d, %q
local t0, sent = ts.monotonic(), 0
while sent < N do
  local batch = {}
  for _ = 1, 20000 do -- big batches: each produce call starts a new client
    sent = sent + 1
    local user = "u" .. sent %% 5000
    batch[#batch + 1] = {key = user, value = json.encode{paymentId = sent, userId = user,
      concertId = "c" .. sent %% 20, amount = 1000 + sent %% 9000, status = "COMPLETED"}}
  end
  assert(ts.produce(addr, "mem.in", batch))
  local ahead = t0 + sent * 1000 // RATE - ts.monotonic()
  if ahead > 0 then ts.sleep(ahead) end
end
]]):format(N, RATE, broker.addr))

local r = env.kroute(dir, broker.addr, {args = {"--no-watch"}})
assert(r:wait_assigned(30000), r:logtext())
local feed = ts.spawn({"lua5.4", dir .. "/feed.lua"}, {stdout = dir .. "/feed.log",
                                                        stderr = dir .. "/feed.log"})
local wm = assert(ts.watermarks(broker.addr))
local function rss_mib()
  return tonumber(env.read("/proc/" .. r.pid .. "/status"):match("VmRSS:%s*(%d+)")) / 1024
end
local warm, peak, last_report = nil, 0, 0
local t0 = ts.monotonic()
while true do
  local done = wm:sum("mem.out", PARTS)
  local rss = rss_mib()
  peak = math.max(peak, rss)
  if not warm and done >= 1000000 then warm = rss end
  if done - last_report >= 1000000 then
    last_report = done
    progress(("%d events through, RSS %.1f MiB"):format(done, rss))
  end
  if done >= N then break end
  assert(ts.monotonic() - t0 < N / RATE * 1000 * 4 + 120000, "the run did not finish")
  ts.sleep(1000)
end
local final = rss_mib()
local _, metrics = env.http("GET", r:admin_url() .. "/metrics")
local lua_mem = 0
for v in metrics:gmatch('kroute_lua_memory_bytes{worker="%d+"} (%d+)') do
  lua_mem = lua_mem + tonumber(v)
end
ts.wait(feed, 60000)
r:stop()
r:cleanup()
print(("memory: %d events at %d/s through the JSON transform: RSS %.1f MiB after 1M, "
       .. "%.1f MiB at the end (growth %.1f MiB), peak %.1f MiB; Lua memory %.0f KiB")
  :format(N, RATE, warm or 0, final, final - (warm or final), peak, lua_mem / 1024))
broker.stop()
os.execute("rm -rf '" .. dir .. "'")

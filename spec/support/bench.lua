--- What the drain benches (spec/bench/throughput_bench.lua,
-- backlog_bench.lua) share: starting the C reference or kroute on a route
-- folder, a process's CPU time and peak RSS, medians, the drain table.
local env = require "support.env"
local ts = env.ts

local bench = {}

bench.REF = ".build/bench-passthrough"

--- Seconds of user + system time of a running process.
function bench.proc_cpu(pid)
  local stat = env.read("/proc/" .. pid .. "/stat")
  local fields = {}
  for f in stat:gsub("^.-%) ", ""):gmatch("%S+") do fields[#fields + 1] = f end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- utime, stime: clock ticks
end

--- Peak resident memory of a running process, MiB.
function bench.peak_rss_mib(pid)
  local kb = env.read("/proc/" .. pid .. "/status"):match("VmHWM:%s*(%d+)")
  return tonumber(kb) / 1024
end

function bench.median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

--- Prints the drain table: for each configuration the medians over the
-- rounds of its rate, CPU per 100k events and peak RSS, with the rate and
-- CPU as ratios to configuration `ref` of the same round (labelled `label`).
-- results[id][round] = {rate =, cpu =, rss =}.
function bench.print_drain_table(configs, results, rounds, ref, label)
  print(("| configuration | events/s | × %s | CPU-s/100k | × %s | peak RSS MiB |"):format(label, label))
  print("|---|---|---|---|---|---|")
  for _, cfg in ipairs(configs) do
    local rate, rate_ratio, cpu, cpu_ratio, rss = {}, {}, {}, {}, {}
    for round = 1, rounds do
      local r, a = results[cfg.id][round], results[ref][round]
      rate[#rate + 1], rate_ratio[#rate_ratio + 1] = r.rate, r.rate / a.rate
      cpu[#cpu + 1], cpu_ratio[#cpu_ratio + 1] = r.cpu, r.cpu / a.cpu
      rss[#rss + 1] = r.rss
    end
    print(("| (%s) %s | %.0f | %.2f | %.2f | %.2f | %.1f |"):format(cfg.id, cfg.name,
      bench.median(rate), bench.median(rate_ratio), bench.median(cpu), bench.median(cpu_ratio),
      bench.median(rss)))
  end
end

--- Starts passthrough.c (a script makes it the naive Lua loop) reading
-- `input` into `output` as group `group`; returns pid and a stop function.
function bench.start_reference(addr, log, group, input, output, script)
  assert(io.open(bench.REF), bench.REF .. " is missing: `make bench` builds it")
  local pid = ts.spawn({bench.REF, addr, group, input, output, script},
                       {stderr = log, stdout = log})
  return pid, function() ts.kill(pid, "TERM"); ts.wait(pid, 30000) end
end

--- Starts kroute on route folder `d` as group `group` with --no-watch and
-- `args`; returns pid and a stop function that checks it stopped cleanly.
function bench.start_kroute(d, addr, group, args)
  local argv = {"--group", group, "--no-watch"}
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local r = env.kroute(d, addr, {args = argv, log_level = "warn"})
  return r.pid, function()
    r:stop_clean()
    r:cleanup()
  end
end

return bench

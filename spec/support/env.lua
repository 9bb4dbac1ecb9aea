-- spec/support/env.lua - what the integration specs share: a `kroute
-- broker` child per spec file, kroute itself as a child process with its
-- log in a file, temporary route folders, and waiting with a deadline.
local ts = require("kroute.testsupport")

local env = {}
env.ts = ts

-- Every child a spec starts is remembered until it is waited for; when the
-- busted process exits (even after a failed assertion skipped a spec's
-- cleanup) the rest are killed, so nothing is left running behind a run.
local children = {}
local function track(pid)
  if pid then children[pid] = true end
  return pid
end
env.reaper = setmetatable({}, {__gc = function()
  for pid in pairs(children) do ts.kill(pid, "KILL"); ts.wait(pid, 1000) end
end})
local spawn, wait = ts.spawn, ts.wait
ts = setmetatable({
  spawn = function(...) return track(spawn(...)) end,
  wait = function(pid, ...)
    local how, code = wait(pid, ...)
    if how then children[pid] = nil end
    return how, code
  end,
}, {__index = ts})
env.ts = ts
env.bin = os.getenv("KROUTE_BIN") or ".build/kroute"
env.sanitized = env.bin:match("asan") ~= nil

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return (out:gsub("%s+$", ""))
end

env.root = sh("pwd -P")

function env.tmpdir()
  return sh("mktemp -d /tmp/kroute-spec.XXXXXX")
end

function env.write(path, text)
  local dir = path:match("^(.*)/[^/]+$")
  if dir then os.execute("mkdir -p '" .. dir .. "'") end
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

function env.read(path)
  return ts.read_file(path) or ""
end

--- Polls fn() every 50 ms until it returns a truthy value or timeout_ms
-- passes; returns that value (or nil).
function env.wait_for(fn, timeout_ms)
  local deadline = ts.monotonic() + (timeout_ms or 20000)
  repeat
    local v = fn()
    if v then return v end
    ts.sleep(50)
  until ts.monotonic() > deadline
  return fn()
end

--- Runs `kroute ...` to completion; returns exit code and combined output.
function env.run_cmd(args, timeout_ms)
  local dir = env.tmpdir()
  local argv = {env.bin}
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local pid = ts.spawn(argv, {stdout = dir .. "/out", stderr = dir .. "/out"})
  local how, code = ts.wait(pid, timeout_ms or 30000)
  if not how then
    ts.kill(pid, "KILL")
    ts.wait(pid, 5000)
    error("kroute " .. table.concat(args, " ") .. " did not finish")
  end
  local out = env.read(dir .. "/out")
  os.execute("rm -rf '" .. dir .. "'")
  return how == "exit" and code or 128 + code, out
end

-- Which broker the integration specs run on: the mock cluster (default, fast)
-- or real Apache Kafka started by spec/support/kafka.sh (KROUTE_TEST_BROKER=kafka).
env.real = os.getenv("KROUTE_TEST_BROKER") == "kafka"
local KAFKA_SH = "spec/support/kafka.sh"

--- `it` on the mock only: the test drives the mock's fault injection, which
-- real Kafka has no counterpart for. On real Kafka it is reported as pending.
-- (busted's `it` and `pending` live in the spec file's environment, not in
-- this module's: they are taken from the busted API table.)
function env.it_mock(name, fn)
  local busted = require "busted"
  if env.real then busted.pending(name .. " [mock fault injection]") else busted.it(name, fn) end
end

--- `it` on real Kafka only (a 3-node cluster, real metadata...).
function env.it_real(name, fn)
  local busted = require "busted"
  if env.real then busted.it(name, fn) else busted.pending(name .. " [real Kafka only]") end
end

local function split_topic(spec)
  local name, parts = spec:match("^(.-):(%d+)$")
  return name or spec, tonumber(parts) or 1
end

-- The mock: a `kroute broker TOPIC:PARTS...` child, or with opts.in_process
-- an in-process mock cluster of opts.nodes brokers (b.mock: fault injection).
local function mock_broker(topics, opts)
  local b = {kind = "mock"}
  if opts.in_process then
    local mc = ts.mock_cluster(opts.nodes or 1)
    b.mock, b.addr = mc, mc:bootstraps()
    function b.create_topic(name, parts) return mc:create_topic(name, parts) end
    for _, t in ipairs(topics) do assert(b.create_topic(split_topic(t))) end
    function b.stop()
      if b.stopped then return end
      b.stopped = true
      mc:close()
    end
    return b
  end
  local dir = env.tmpdir()
  local argv = {env.bin, "broker"}
  for _, t in ipairs(topics) do argv[#argv + 1] = t end
  b.dir = dir
  b.pid = ts.spawn(argv, {stdout = dir .. "/addr", stderr = dir .. "/log"})
  b.addr = env.wait_for(function()
    return env.read(dir .. "/addr"):match("^(%S+)\n")
  end, 30000) -- a machine busy with a JVM broker has taken over 10 s
  assert(b.addr, "kroute broker printed no address: " .. env.read(dir .. "/log"))
  -- the mock creates a topic (4 partitions) on its first metadata request
  function b.create_topic() return true end
  function b.stop()
    if b.stopped then return end
    b.stopped = true
    ts.kill(b.pid, "TERM")
    ts.wait(b.pid, 10000)
    os.execute("rm -rf '" .. dir .. "'")
  end
  return b
end

-- Real Kafka: a fresh KRaft cluster of opts.nodes (1 or 3) per call, so
-- every spec file has the topics, groups and offsets to itself. With 3
-- nodes topics get replication factor 3 and min.insync.replicas 2.
local function real_broker(topics, opts)
  local nodes = opts.nodes or 1
  os.execute("mkdir -p .build/kafka/run")
  local dir = sh("mktemp -d " .. env.root .. "/.build/kafka/run/spec.XXXXXX")
  local b = {kind = "kafka", dir = dir, nodes = nodes}
  -- (its errors go beside DIR: start wants DIR empty)
  local out = sh(("%s start '%s' %d 2>'%s.err'"):format(KAFKA_SH, dir, nodes, dir))
  b.addr = out:match("([%w%.:,]+)$")
  assert(b.addr and b.addr:match(":%d+"), "kafka.sh start failed: " .. out .. "\n"
         .. env.read(dir .. ".err"))
  os.remove(dir .. ".err")
  local topic_opts = {replication = nodes >= 3 and 3 or 1,
                      config = nodes >= 3 and {["min.insync.replicas"] = "2"} or nil}
  function b.create_topic(name, parts)
    return ts.create_topics(b.addr, {name .. ":" .. (parts or 1)}, topic_opts)
  end
  if #topics > 0 then assert(ts.create_topics(b.addr, topics, topic_opts)) end
  --- SIGKILLs node n (1-based) and later starts it again with its data.
  function b.kill_node(n) assert(os.execute(("%s kill '%s' %d"):format(KAFKA_SH, dir, n))) end
  --- SIGTERMs node n and waits for it to stop (a graceful shutdown).
  function b.stop_node(n) assert(os.execute(("%s term '%s' %d"):format(KAFKA_SH, dir, n))) end
  function b.restart_node(n)
    assert(os.execute(("%s restart '%s' %d >/dev/null"):format(KAFKA_SH, dir, n)))
  end
  function b.stop()
    if b.stopped then return end
    b.stopped = true
    os.execute(("%s stop '%s'"):format(KAFKA_SH, dir))
  end
  return b
end

--- A broker with `topics` ("name:partitions") created: {addr, stop(),
-- create_topic(name, parts), kind = "mock"|"kafka"}. opts.nodes: brokers in
-- the cluster; opts.in_process: on the mock, an in-process cluster whose
-- fault injection is b.mock (nil on real Kafka).
function env.broker(topics, opts)
  opts = opts or {}
  if env.real then return real_broker(topics or {}, opts) end
  return mock_broker(topics or {}, opts)
end

-- Fast-reacting consumer settings for the mock broker (spec/README.md, "The two brokers").
env.fast_kafka = [[
kafka:
  brokers: ${TEST_BROKERS}
  consumer: { fetch.wait.max.ms: 10, session.timeout.ms: 6000, heartbeat.interval.ms: 500, topic.metadata.refresh.interval.ms: 1000 }
  producer: { linger.ms: 2 }
]]

--- Writes a `reply: nest` route folder answering pattern "sum" with the
-- sum of the numbers in the request (the specs' stand-in for a service).
function env.write_sum_responder(dir)
  env.write(dir .. "/r.yaml", env.fast_kafka .. [[
routes:
  - name: sum
    match: sum
    handler: sum.lua
    reply: nest
]])
  env.write(dir .. "/sum.lua", [[
return function(msg)
  local total = 0
  for _, n in ipairs(msg.data) do total = total + n end
  return total
end
]])
end

local Router = {}
Router.__index = Router

--- Starts `kroute run PATH...` against broker address `brokers` (exported
-- as TEST_BROKERS for route files). opts.args: extra flags; opts.env: more
-- environment variables for the route files.
function env.kroute(paths, brokers, opts)
  opts = opts or {}
  local dir = env.tmpdir()
  -- an admin port of its own: specs run several instances side by side
  local argv = {env.bin, "run", "--log-level", opts.log_level or "info",
                "--admin", opts.admin or "127.0.0.1:0"}
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  for _, p in ipairs(type(paths) == "table" and paths or {paths}) do argv[#argv + 1] = p end
  local r = setmetatable({dir = dir, log = dir .. "/kroute.log"}, Router)
  local vars = {TEST_BROKERS = brokers or "embedded"}
  for k, v in pairs(opts.env or {}) do vars[k] = v end
  r.pid = ts.spawn(argv, {stderr = r.log, stdout = r.log, env = vars})
  return r
end

function Router:logtext() return env.read(self.log) end

--- The admin endpoint's base URL, once kroute is running.
function Router:admin_url(timeout_ms)
  return self:wait_log("admin (http://[^;%s]+);", timeout_ms or 20000)
end

--- An HTTP request to the admin endpoint with curl: status, body.
-- headers: optional list of "Name: value"; timeout_s: default 60.
function env.http(method, url, headers, timeout_s)
  local h = ""
  for _, v in ipairs(headers or {}) do h = h .. " -H '" .. v .. "'" end
  local p = assert(io.popen(("curl -s -m %d -X %s%s -w '\n%%{http_code}' '%s'")
    :format(timeout_s or 60, method, h, url)))
  local out = p:read("a")
  p:close()
  local body, status = out:match("^(.*)\n(%d+)$")
  return tonumber(status), body
end

--- A /metrics scrape read by Prometheus's own parser (support/promparse.py,
-- python3-prometheus-client): samples by name, and the text. Text the
-- parser rejects fails the spec.
function env.scrape(url)
  local status, body = env.http("GET", url .. "/metrics")
  if status ~= 200 then error("GET /metrics: " .. tostring(status), 2) end
  local tmp = os.tmpname()
  env.write(tmp, body)
  local p = assert(io.popen("/usr/bin/python3 spec/support/promparse.py < " .. tmp .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  os.remove(tmp)
  if not ok then error("Prometheus's parser rejected the scrape:\n" .. out .. "\n" .. body, 2) end
  local json = require("kroute.native").json
  local samples = {}
  for line in out:gmatch("[^\n]+") do
    local s = json.decode(line)
    samples[s.name] = samples[s.name] or {}
    table.insert(samples[s.name], s)
  end
  return samples, body
end

--- The value of the sample `name` whose labels include `labels` (nil: none).
function env.metric(samples, name, labels)
  for _, s in ipairs(samples[name] or {}) do
    local match = true
    for k, v in pairs(labels or {}) do match = match and s.labels[k] == v end
    if match then return s.value end
  end
end

--- GET /reload of a running kroute, decoded.
function Router:reload_status()
  local status, body = env.http("GET", self:admin_url() .. "/reload")
  assert(status == 200, "GET /reload: " .. tostring(status) .. " " .. tostring(body))
  return require("kroute.native").json.decode(body)
end

--- Waits until the log matches a Lua pattern; returns the first capture.
function Router:wait_log(pattern, timeout_ms)
  return env.wait_for(function() return self:logtext():match(pattern) end, timeout_ms)
end

--- Waits until every group has partitions assigned.
function Router:wait_assigned(timeout_ms)
  return self:wait_log("assigned %d+ partition", timeout_ms or 20000)
end

local function sanitizer_report(text)
  return text:match("ERROR: AddressSanitizer[^\n]*") or text:match("ERROR: LeakSanitizer[^\n]*")
      or text:match("runtime error:[^\n]*")
end

--- SIGTERM and wait; returns exit code. Raises if a sanitizer reported.
function Router:stop(timeout_ms)
  ts.kill(self.pid, "TERM")
  local how, code = ts.wait(self.pid, timeout_ms or 30000)
  if not how then
    ts.kill(self.pid, "KILL")
    ts.wait(self.pid, 5000)
    error("kroute did not stop on SIGTERM; log:\n" .. self:logtext())
  end
  local report = sanitizer_report(self:logtext())
  if report then error("sanitizer: " .. report .. "\n" .. self:logtext()) end
  return how == "exit" and code or 128 + code
end

--- SIGTERM and wait; fails the test with kroute's log unless it exits 0
--- (a failure that says only "expected 0, got 1" cannot be diagnosed).
function Router:stop_clean(timeout_ms)
  local code = self:stop(timeout_ms)
  if code ~= 0 then
    error(("kroute exited %d on SIGTERM, not 0; log:\n%s"):format(code, self:logtext()), 2)
  end
end

function Router:kill()
  ts.kill(self.pid, "KILL")
  ts.wait(self.pid, 10000)
end

--- Waits for the process to exit by itself; returns exit code or nil.
function Router:wait_exit(timeout_ms)
  local how, code = ts.wait(self.pid, timeout_ms or 20000)
  if not how then return nil end
  return how == "exit" and code or 128 + code
end

function Router:cleanup()
  os.execute("rm -rf '" .. self.dir .. "'")
end

--- All records of `topic` once at least `min` are there (bounded wait).
function env.consume(brokers, topic, min, timeout_ms)
  return ts.consume(brokers, topic, {min = min or 0, timeout = timeout_ms or 20000, idle = 300})
end

--- Header value(s) by name from a consumed record's {{name, value}} list.
function env.header(rec, name)
  local vals = {}
  for _, h in ipairs(rec.headers or {}) do
    if h[1] == name then vals[#vals + 1] = h[2] end
  end
  return vals[1], vals
end

return env

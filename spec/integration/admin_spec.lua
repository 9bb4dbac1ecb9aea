-- The admin endpoint: /metrics scraped and parsed by Prometheus's own text
-- parser (python3-prometheus-client), /healthz (also when the broker goes
-- away), /routes, and wrong methods and paths.
local env = require "support.env"
local ts = env.ts
local json = require("kroute.native").json

local scrape, value = env.scrape, env.metric

describe("admin endpoint", function()
  local broker, dir, r, url

  setup(function()
    broker = env.broker{"adm.in:2", "adm.out:2"}
    dir = env.tmpdir()
    env.write(dir .. "/r.yaml", env.fast_kafka .. [[
routes:
  - name: screen
    match: adm.in
    handler: screen.lua
    to: adm.out
    retry: { attempts: 2, backoff: 10ms }
]])
    env.write(dir .. "/screen.lua", [[
return function(msg)
  if msg.value == "skip" then return end
  if msg.value == "bad" then error("refused") end
  return msg.value
end
]])
    r = env.kroute(dir, broker.addr, {args = {"--workers", "2"}})
    assert.is_truthy(r:wait_assigned(30000), r:logtext())
    url = r:admin_url()
  end)

  teardown(function()
    if r then r:stop(); r:cleanup() end
    broker.stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("serves per-route counters, latency, lag, committed offsets and Lua memory", function()
    ts.produce(broker.addr, "adm.in", {
      {key = "a", value = "one"}, {key = "b", value = "two"}, {key = "c", value = "three"},
      {key = "d", value = "skip"}, {key = "e", value = "bad"},
    })
    assert.equal(3, #env.consume(broker.addr, "adm.out", 3, 15000))
    assert.equal(1, #env.consume(broker.addr, "adm.in.dlq", 1, 15000))
    local samples
    -- counters settle once the DLQ copy is delivered and offsets committed
    assert.is_truthy(env.wait_for(function()
      samples = scrape(url)
      local lag0 = value(samples, "kroute_consumer_lag", {topic = "adm.in", partition = "0"})
      local lag1 = value(samples, "kroute_consumer_lag", {topic = "adm.in", partition = "1"})
      return value(samples, "kroute_dead_letters_total", {route = "screen"}) == 1
        and lag0 == 0 and lag1 == 0
    end, 15000), r:logtext())
    local route = {route = "screen"}
    assert.equal(5, value(samples, "kroute_messages_in_total", route))
    assert.equal(3, value(samples, "kroute_messages_out_total", route))
    assert.equal(1, value(samples, "kroute_messages_filtered_total", route))
    assert.equal(2, value(samples, "kroute_handler_errors_total", route))
    assert.equal(1, value(samples, "kroute_retries_total", route))
    -- every run timed: 3 outputs, 1 filtered, 2 failed attempts
    assert.equal(6, value(samples, "kroute_handler_duration_seconds_count", route))
    assert.equal(6, value(samples, "kroute_handler_duration_seconds_bucket",
                          {route = "screen", le = "+Inf"}))
    local committed = 0
    for _, s in ipairs(samples.kroute_committed_offset) do
      assert.equal("kroute", s.labels.group)
      committed = committed + s.value
    end
    assert.equal(5, committed)
    assert.is_true(value(samples, "kroute_lua_memory_bytes", {worker = "0"}) > 0)
    assert.is_true(value(samples, "kroute_lua_memory_bytes", {worker = "1"}) > 0)
    assert.equal(1, value(samples, "kroute_config_generation"))
    assert.equal(0, value(samples, "kroute_reload_failures_total"))
    assert.is_true(value(samples, "kroute_uptime_seconds") >= 0)
  end)

  it("lists the live routes and the topics they match", function()
    local status, body = env.http("GET", url .. "/routes")
    assert.equal(200, status)
    local doc = json.decode(body)
    assert.equal(1, doc.generation)
    local rt = doc.routes[1]
    assert.equal("screen", rt.name)
    assert.same({"adm.in"}, rt.match)
    assert.equal("adm.out", rt.to)
    assert.equal("kroute", rt.group)
    assert.equal("partition", rt.ordering)
    assert.matches("screen%.lua$", rt.handler)
    assert.same({"adm.in"}, rt.topics)
  end)

  it("answers 404 and 405 for what it does not serve", function()
    assert.equal(404, (env.http("GET", url .. "/nope")))
    assert.equal(405, (env.http("POST", url .. "/metrics")))
    assert.equal(405, (env.http("DELETE", url .. "/reload")))
  end)

  it("is healthy while it consumes, and says why not when the broker is gone", function()
    local status, body = env.http("GET", url .. "/healthz")
    assert.equal(200, status)
    assert.equal("ok\n", body)
    broker.stop()
    -- answered from the probe's last result (a thread of its own asks the
    -- cluster every second), so it turns within a few seconds
    assert.is_truthy(env.wait_for(function()
      status, body = env.http("GET", url .. "/healthz")
      return status == 503
    end, 10000), body)
    assert.matches("broker unreachable: no metadata answer for %d+%.%d s", body)
  end)
end)

-- The endpoint's defences: a flood of idle connections, bad --admin
-- addresses, and the token POST /reload needs when the endpoint is
-- reachable from the network (or when one is configured).
describe("admin endpoint hardening", function()
  local dir
  local wrappers = 0
  local http = env.http

  setup(function()
    dir = env.tmpdir()
    env.write(dir .. "/r.yaml", [[
routes:
  - { name: echo, match: hard.in, handler: echo.lua, to: hard.out }
]])
    env.write(dir .. "/echo.lua", "return function(msg) return msg.value end\n")
  end)

  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

  -- kroute run with the embedded broker; opts as env.kroute's. `prelude`:
  -- shell lines run before kroute replaces the shell (limits, environment).
  local function start(opts, prelude)
    local bin = env.bin
    if prelude then
      wrappers = wrappers + 1 -- kept until teardown: the shell reads it after spawn returns
      env.bin = env.write(("%s/wrapper%d.sh"):format(dir, wrappers),
                          ("#!/bin/sh\n%s\nexec '%s' \"$@\"\n"):format(prelude, bin))
      os.execute("chmod +x '" .. env.bin .. "'")
    end
    local r = env.kroute(dir, "embedded", opts)
    env.bin = bin
    local url = r:admin_url()
    assert.is_truthy(url, r:logtext())
    -- an all-interfaces endpoint is reached through loopback
    return r, (url:gsub("//0%.0%.0%.0:", "//127.0.0.1:"))
  end

  local function reloads(url)
    local status, body = http("GET", url .. "/reload")
    assert.equal(200, status)
    return json.decode(body).reloads
  end

  it("still answers /healthz while 1,100 idle connections are held open", function()
    -- kroute gets the common default of 1,024 descriptors, which the flood
    -- would exhaust if every connection were kept
    local r, url = start(nil, "ulimit -Sn 1024 || exit 99")
    local flood = env.write(dir .. "/flood.py", [[
import resource, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks, connected = [], 0
for i in range(n):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
        connected += 1
        if i % 2:  # half of them send the start of a request, never its end
            s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    except OSError:
        pass
    socks.append(s)
print("connected", connected, flush=True)
time.sleep(300)
]])
    local host, port = url:match("^http://([%d%.]+):(%d+)$")
    local fpid = ts.spawn({"/usr/bin/python3", flood, host, port, "1100"},
                          {stdout = dir .. "/flood.out", stderr = dir .. "/flood.out"})
    local n = env.wait_for(function()
      return tonumber(env.read(dir .. "/flood.out"):match("connected (%d+)"))
    end, 60000)
    local status, body = http("GET", url .. "/healthz", nil, 10)
    local status2 = http("GET", url .. "/metrics", nil, 10)
    ts.kill(fpid, "KILL")
    ts.wait(fpid, 5000)
    assert.is_truthy(n, env.read(dir .. "/flood.out"))
    assert.is_true(n >= 1000, "only " .. n .. " connections were made")
    assert.equal(200, status, r:logtext())
    assert.equal("ok\n", body)
    assert.equal(200, status2)
    assert.is_nil(r:wait_exit(0), "kroute exited:\n" .. r:logtext())
    r:stop_clean()
    r:cleanup()
  end)

  it("refuses an --admin address it cannot honour, with exit code 2", function()
    for _, bad in ipairs{"127.0.0.1:99999", "127.0.0.1:65536", "127.0.0.1:-1",
                         "127.0.0.1:80x", "127.0.0.1:", ":9464", "[::1:9464"} do
      local code, out = env.run_cmd({"run", "--brokers", "embedded", "--admin", bad, dir}, 20000)
      assert.equal(2, code, bad .. ": " .. out)
      assert.matches("%-%-admin", out)
      assert.matches(bad:gsub("%p", "%%%0"), out)
    end
    local code, out = env.run_cmd({"run", "--brokers", "embedded", "--admin", "127.0.0.1:99999",
                                   dir}, 20000)
    assert.equal(2, code)
    assert.matches("port must be 0 to 65535", out)
  end)

  it("binds all interfaces only with a warning, and then refuses POST /reload without a token",
     function()
    for _, all in ipairs{"0.0.0.0:0", "*:0", "0:0"} do
      local r, url = start{admin = all}
      assert.matches("warn .-reachable from the network", r:logtext())
      assert.equal(200, (http("GET", url .. "/healthz")))
      local status, body = http("POST", url .. "/reload")
      assert.equal(403, status, all)
      assert.matches("KROUTE_ADMIN_TOKEN", body)
      assert.equal(0, reloads(url))
      r:stop_clean()
      r:cleanup()
    end
  end)

  it("needs the token from --admin-token-file for POST /reload; GETs stay open", function()
    local file = env.write(dir .. "/token", "s3cret-token\n")
    local r, url = start{args = {"--admin-token-file", file}}
    assert.equal(401, (http("POST", url .. "/reload")))
    assert.equal(401, (http("POST", url .. "/reload", {"Authorization: Bearer wrong"})))
    assert.equal(401, (http("POST", url .. "/reload", {"Authorization: Bearer s3cret-tokenX"})))
    assert.equal(401, (http("POST", url .. "/reload", {"Authorization: Bearer s3cret"})))
    assert.equal(401, (http("POST", url .. "/reload", {"Authorization: Basic s3cret-token"})))
    assert.equal(0, reloads(url))
    local status, body = http("POST", url .. "/reload", {"Authorization: Bearer s3cret-token"})
    assert.equal(200, status, body)
    assert.is_true(json.decode(body).ok)
    assert.equal(1, reloads(url))
    assert.equal(200, (http("GET", url .. "/healthz")))
    assert.equal(200, (http("GET", url .. "/metrics")))
    r:stop_clean()
    r:cleanup()
  end)

  it("takes the token from KROUTE_ADMIN_TOKEN, for an endpoint open to the network", function()
    local r, url = start({admin = "0.0.0.0:0"}, "export KROUTE_ADMIN_TOKEN=from-env")
    assert.equal(401, (http("POST", url .. "/reload", {"Authorization: Bearer nope"})))
    assert.equal(200, (http("POST", url .. "/reload", {"Authorization: Bearer from-env"})))
    assert.equal(1, reloads(url))
    r:stop_clean()
    r:cleanup()
  end)

  it("refuses to start on an unreadable or empty token file", function()
    local empty = env.write(dir .. "/empty-token", "\n")
    for _, f in ipairs{dir .. "/no-such-token", empty} do
      local code, out = env.run_cmd({"run", "--brokers", "embedded", "--admin", "127.0.0.1:0",
                                     "--admin-token-file", f, dir}, 20000)
      assert.equal(2, code, out)
      assert.matches("%-%-admin%-token%-file " .. f:gsub("%p", "%%%0") .. ": ", out)
    end
  end)
end)

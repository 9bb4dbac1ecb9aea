-- The admin endpoint: /metrics scraped and parsed by Prometheus's own text
-- parser (python3-prometheus-client), /healthz (also when the broker goes
-- away), /routes, and wrong methods and paths.
local env = require "support.env"
local ts = env.ts
local json = require("kroute.native").json

-- Samples of a scrape, through the reference parser: name -> list.
local function scrape(url)
  local status, body = env.http("GET", url .. "/metrics")
  assert.equal(200, status)
  local tmp = os.tmpname()
  env.write(tmp, body)
  local p = assert(io.popen("/usr/bin/python3 spec/support/promparse.py < " .. tmp .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  os.remove(tmp)
  assert.is_true(ok, "Prometheus's parser rejected the scrape:\n" .. out .. "\n" .. body)
  local samples = {}
  for line in out:gmatch("[^\n]+") do
    local s = json.decode(line)
    samples[s.name] = samples[s.name] or {}
    table.insert(samples[s.name], s)
  end
  return samples, body
end

-- The value of the sample `name` whose labels include `labels`.
local function value(samples, name, labels)
  for _, s in ipairs(samples[name] or {}) do
    local match = true
    for k, v in pairs(labels or {}) do match = match and s.labels[k] == v end
    if match then return s.value end
  end
end

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
    status, body = env.http("GET", url .. "/healthz")
    assert.equal(503, status)
    assert.matches("broker unreachable", body)
  end)
end)

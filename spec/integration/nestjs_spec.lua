-- kroute in a real NestJS 11 system (examples/nestjs): NestJS ClientKafka
-- calls kroute's reply: nest routes, and a kroute route calls a NestJS
-- @MessagePattern service with kroute.request. The NestJS packages are
-- installed with npm into .build/nestjs on first run (examples/nestjs/install.sh).
local env = require "support.env"
local ts = env.ts
local json = require("kroute.native").json

local nest = require "support.nest"
local ROUTES = nest.dir .. "routes.yaml"

local node, lines = nest.node, nest.json_lines

-- Runs client.js to completion; returns its JSON result lines by call/scenario.
local function client(dir, addr, scenario, extra, timeout_ms)
  local log = dir .. "/client-" .. scenario .. "-" .. ts.monotonic()
  local args = {"--brokers", addr, "--scenario", scenario}
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local pid = node("client.js", args, log)
  local how, code = ts.wait(pid, timeout_ms or 90000)
  if not how then ts.kill(pid, "KILL"); ts.wait(pid, 5000) end
  assert.same({"exit", 0}, {how, code}, env.read(log .. ".err"))
  local by = {}
  for _, l in ipairs(lines(log .. ".out")) do by[l.call or l.scenario] = l end
  return by, log
end

local function wait_ready(log)
  return env.wait_for(function() return env.read(log .. ".out"):match("READY") end, 60000)
end

describe("NestJS interop", function()
  local broker, router, dir, users, users_log

  setup(function()
    nest.install()
    local topics = nest.client_topics(4, 4)
    for _, t in ipairs{"user.get:4", "user.get.reply:4", "print:4", "orders:4", "order.enriched:4"} do
      topics[#topics + 1] = t
    end
    broker = env.broker(topics)
    dir = env.tmpdir()
    router = env.kroute(ROUTES, broker.addr, {args = {"--brokers", broker.addr},
                                             log_level = "debug"})
    users_log = dir .. "/users"
    users = node("users-service.js", {"--brokers", broker.addr}, users_log)
    assert.is_truthy(wait_ready(users_log), env.read(users_log .. ".err"))
    assert.is_truthy(router:wait_log("group=kroute%-client assigned", 40000), router:logtext())
  end)

  teardown(function()
    if users then ts.kill(users, "TERM"); ts.wait(users, 15000) end
    if router then
      local code = router:stop()
      router:cleanup()
      assert.equal(0, code)
    end
    broker.stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("answers ClientKafka.send and emit the way a NestJS service does", function()
    local r = client(dir, broker.addr, "basic")
    -- numbers come back as NestJS's parser reads them: the text "6"
    assert.same({true, "6"}, {r.sum.ok, r.sum.value})
    assert.same({true, "9"}, {r.max.ok, r.max.value})
    -- the {key, value, headers} form: the handler saw the key and the header
    assert.is_true(r.echo.ok)
    assert.same({data = {a = 1}, key = "k1", h = "v"}, r.echo.value)
    -- the handler's reply record kept its key and header on the way to ClientKafka,
    -- beside the correlation id and is-disposed (a 0x00 byte: a Buffer, as hex)
    assert.equal("k1", r.echo.reply_key)
    assert.equal("v", r.echo.reply_headers.h)
    assert.equal("00", r.echo.reply_headers["kafka_nest-is-disposed"])
    assert.is_string(r.echo.reply_headers.kafka_correlationId)
    -- a handler error is a NestJS error on the caller's side, not a timeout
    assert.is_false(r.fail.ok)
    assert.matches("boom", r.fail.error)
    assert.matches('"status":"error"', r.fail.error)
    -- a subscribed pattern without a function: NestJS's own error text
    assert.is_false(r.mul.ok)
    assert.equal("There is no matching message handler defined in the remote service.",
                 r.mul.error)
    -- emit reaches the event route and nothing is replied
    local seen = env.consume(broker.addr, "print.seen", 1, 15000)
    assert.equal(1, #seen)
    assert.matches("hello", seen[1].value)
    assert.is_nil(router:logtext():match("topic=print[^\n]*%-> reply"))
  end)

  -- NestJS's ServerKafka tests the correlation id for truthiness: an empty one
  -- is an event. Its unmatched-pattern answer carries kafka_nest-err only.
  it("takes an empty kafka_correlationId for an event, and answers an unmatched pattern as NestJS 11.2", function()
    local function req(corr, value)
      return {partition = 0, value = value, headers = {{"kafka_correlationId", corr},
        {"kafka_replyTopic", "sum.reply"}, {"kafka_replyPartition", "0"}}}
    end
    ts.produce(broker.addr, "sum", {req("", "[5,5]"), req("after-empty", "[6,6]")})
    ts.produce(broker.addr, "mul", {{value = "[2,3]", headers = {
      {"kafka_correlationId", "nomatch-1"}, {"kafka_replyTopic", "mul.reply"},
      {"kafka_replyPartition", "0"}}}})
    local replies, nomatch
    assert.is_truthy(env.wait_for(function()
      replies = {}
      for _, r in ipairs(env.consume(broker.addr, "sum.reply", 0, 2000)) do
        replies[env.header(r, "kafka_correlationId")] = r.value
      end
      for _, r in ipairs(env.consume(broker.addr, "mul.reply", 0, 2000)) do
        if env.header(r, "kafka_correlationId") == "nomatch-1" then nomatch = r end
      end
      return replies["after-empty"] and nomatch
    end, 30000))
    -- the request behind it in the same partition was answered; the empty one never
    assert.equal("12", replies["after-empty"])
    assert.is_nil(replies[""])
    assert.equal("There is no matching message handler defined in the remote service.",
                 (env.header(nomatch, "kafka_nest-err")))
    assert.is_nil(env.header(nomatch, "kafka_nest-is-disposed"))
  end)

  it("answers 50 concurrent requests, each with its own reply", function()
    local r = client(dir, broker.addr, "concurrent", {"--n", "50"})
    assert.same({50, 50, 0}, {r.concurrent.n, r.concurrent.correct, r.concurrent.errors})
  end)

  -- Two ClientKafka instances in one group cannot be run here: librdkafka
  -- 2.0.2's mock broker fails the second kafkajs member's SyncGroup
  -- (INVALID_REQUEST), so the group never forms. What makes two instances
  -- work is that each reply lands on the partition its request names; that
  -- is checked byte for byte with requests shaped like ClientKafka's.
  it("replies on the partition each request names in kafka_replyPartition", function()
    local reqs = {}
    for i = 1, 12 do
      reqs[i] = {value = ("[%d,%d]"):format(i, i), headers = {
        {"kafka_correlationId", "corr-" .. i}, {"kafka_replyTopic", "sum.reply"},
        {"kafka_replyPartition", tostring(i % 4)}}}
    end
    ts.produce(broker.addr, "sum", reqs)
    local want = {}
    for i = 1, 12 do want["corr-" .. i] = {partition = i % 4, value = tostring(2 * i)} end
    local got = env.wait_for(function()
      local found = {}
      for _, r in ipairs(env.consume(broker.addr, "sum.reply", 0, 3000)) do
        local corr = env.header(r, "kafka_correlationId")
        if want[corr] then found[corr] = {partition = r.partition, value = r.value,
                                          disposed = env.header(r, "kafka_nest-is-disposed")} end
      end
      local n = 0
      for _ in pairs(found) do n = n + 1 end
      return n == 12 and found
    end, 30000)
    assert.is_truthy(got)
    for corr, w in pairs(want) do
      assert.equal(w.partition, got[corr].partition, corr)
      assert.equal(w.value, got[corr].value, corr)
      assert.equal("\0", got[corr].disposed, corr)
    end
  end)

  -- The cases the mock cannot form (see above); real Kafka can.
  env.it_real("gets each of two ClientKafka instances in one group its own replies", function()
    -- both join first (--delay outlasts the rebalance), then 100 concurrent calls each
    local pids, logs = {}, {}
    for i = 1, 2 do
      logs[i] = dir .. "/pair-client-" .. i
      pids[i] = node("client.js", {"--brokers", broker.addr, "--scenario", "concurrent",
                                   "--n", "100", "--group", "nest-pair", "--delay", "10000",
                                   "--timeout", "30000"}, logs[i])
    end
    for i = 1, 2 do
      local how, code = ts.wait(pids[i], 120000)
      if not how then ts.kill(pids[i], "KILL"); ts.wait(pids[i], 5000) end
      assert.same({"exit", 0}, {how, code}, env.read(logs[i] .. ".err"))
      local res = lines(logs[i] .. ".out")[1]
      assert.same({100, 100, 0}, {res.n, res.correct, res.errors}, json.encode(res))
    end
  end)

  env.it_real("answers a NestJS client from two kroute responders in one group", function()
    local second = env.kroute(ROUTES, broker.addr, {args = {"--brokers", broker.addr}})
    assert.is_truthy(second:wait_log("group=kroute assigned", 60000), second:logtext())
    -- (a request that lands in the rebalance waits in its partition: none is lost)
    local function answered(r)
      local status, body = env.http("GET", r:admin_url() .. "/metrics")
      assert.equal(200, status)
      return tonumber(body:match('kroute_messages_out_total{route="math"} (%d+)')) or 0
    end
    local before = {answered(router), answered(second)}
    local r = client(dir, broker.addr, "concurrent", {"--n", "200"})
    assert.same({200, 200, 0}, {r.concurrent.n, r.concurrent.correct, r.concurrent.errors})
    local after = {answered(router), answered(second)}
    local code = second:stop()
    second:cleanup()
    assert.equal(0, code)
    -- sum has 4 partitions split between the two: both answered some
    assert.is_true(after[1] > before[1], "first responder answered none")
    assert.is_true(after[2] > before[2], "second responder answered none")
    assert.equal(200, (after[1] - before[1]) + (after[2] - before[2]))
  end)

  it("calls a NestJS @MessagePattern service with kroute.request; a manual-commit NestJS consumer reads the result", function()
    local mlog = dir .. "/manual"
    local manual = node("manual-commit.js", {"--brokers", broker.addr}, mlog)
    assert.is_truthy(wait_ready(mlog), env.read(mlog .. ".err"))
    local orders = {}
    for i = 1, 10 do
      orders[i] = {key = "u" .. i, value = json.encode{id = "o" .. i, userId = i, amount = i * 100}}
    end
    ts.produce(broker.addr, "orders", orders)
    local got = env.wait_for(function()
      local evs = lines(mlog .. ".out")
      return #evs >= 10 and evs
    end, 40000)
    ts.kill(manual, "TERM")
    ts.wait(manual, 15000)
    assert.is_truthy(got, env.read(mlog .. ".err"))
    local by_order = {}
    for _, e in ipairs(got) do by_order[e.event.orderId] = e end
    for i = 1, 10 do
      local e = by_order["o" .. i]
      assert.is_truthy(e, "order o" .. i .. " not enriched")
      assert.same({id = i, name = "User " .. i, tier = i % 2 == 1 and "gold" or "silver"},
                  e.event.user)
      assert.equal(i * 100, e.event.amount)
      assert.equal(tostring(i), e.key)
    end
    -- the NestJS consumer committed what it processed (autoCommit: false)
    local committed = ts.committed(broker.addr, "nest-orders-server", "order.enriched")
    local hw = ts.high_watermarks(broker.addr, "order.enriched")
    for p, high in pairs(hw) do assert.equal(high, math.max(committed[p], 0)) end
  end)

  it("turns a NestJS service's RpcException into nil, message for the handler", function()
    ts.produce(broker.addr, "orders", {{key = "u0", value = json.encode{id = "bad", userId = 0}}})
    local dlq = env.consume(broker.addr, "orders.dlq", 1, 30000)
    assert.equal(1, #dlq)
    assert.matches("user.get failed for user 0: no such user",
                   (env.header(dlq[1], "kafka_dlt-exception-message")))
  end)

  it("dead-letters a request whose reply partition does not exist", function()
    ts.produce(broker.addr, "sum", {{value = "[1,2]", headers = {
      {"kafka_correlationId", "lost-1"}, {"kafka_replyTopic", "sum.reply"},
      {"kafka_replyPartition", "99"}}}})
    local dlq = env.consume(broker.addr, "sum.dlq", 1, 30000)
    assert.equal(1, #dlq)
    assert.equal("[1,2]", dlq[1].value)
    assert.equal("lost-1", (env.header(dlq[1], "kafka_correlationId")))
    assert.matches("delivery failed", (env.header(dlq[1], "kafka_dlt-exception-message")))
  end)

  it("answers a request after kroute is SIGKILLed between request and reply", function()
    local log = dir .. "/slow"
    local pid = node("client.js", {"--brokers", broker.addr, "--scenario", "slow",
                                   "--timeout", "90000"}, log)
    assert.is_truthy(router:wait_log("slow request started", 60000), router:logtext())
    router:kill() -- mid-handler: the reply was never produced, the offset never committed
    router:cleanup()
    router = env.kroute(ROUTES, broker.addr, {args = {"--brokers", broker.addr}})
    assert.same({"exit", 0}, {ts.wait(pid, 120000)}, env.read(log .. ".err"))
    local res = lines(log .. ".out")[1]
    assert.is_true(res.ok, json.encode(res))
    assert.is_true(res.value.done)
  end)
end)

-- Topics and cluster metadata in the test support module
-- (core/testsupport/admin.c): ts.brokers and ts.partition_leaders on an
-- in-process mock cluster, every admin call failing with its cause and
-- within its bound against an unreachable broker, and create_topics /
-- delete_topics against real Kafka when KROUTE_TEST_BROKER=kafka
-- (the mock implements no Admin API).
local ts = require("kroute.testsupport")

-- Runs f(...) and returns its results packed, with the elapsed milliseconds.
local function timed(f, ...)
  local t0 = ts.monotonic()
  local r = table.pack(f(...))
  return r, ts.monotonic() - t0
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

describe("testsupport admin on the mock cluster", function()
  local mc, addr
  local TOPIC, PARTS = "admin.leaders", 6

  setup(function()
    mc = ts.mock_cluster(3)
    addr = mc:bootstraps()
    assert(mc:create_topic(TOPIC, PARTS))
  end)

  teardown(function()
    mc:close()
  end)

  it("lists the brokers sorted by id, with the addresses of the bootstraps", function()
    local brokers = assert(ts.brokers(addr))
    assert.equal(3, #brokers)
    local listed = {}
    for i, b in ipairs(brokers) do
      assert.equal(i, b.id)
      assert.is_string(b.host)
      assert.equal("integer", math.type(b.port))
      listed[#listed + 1] = b.host .. ":" .. b.port
    end
    local boot = {}
    for hp in addr:gmatch("[^,]+") do boot[#boot + 1] = hp end
    table.sort(listed)
    table.sort(boot)
    assert.same(boot, listed)
  end)

  it("maps every partition, keyed from 0, to a broker of the cluster", function()
    local leaders = assert(ts.partition_leaders(addr, TOPIC))
    assert.same({0, 1, 2, 3, 4, 5}, sorted_keys(leaders))
    for p = 0, PARTS - 1 do
      assert.is_true(leaders[p] >= 1 and leaders[p] <= 3, "partition " .. p)
    end
  end)

  it("follows leader moves", function()
    local want = {}
    for p = 0, PARTS - 1 do
      want[p] = (p + 1) % 3 + 1
      assert(mc:set_leader(TOPIC, p, want[p]))
    end
    assert.same(want, assert(ts.partition_leaders(addr, TOPIC)))
  end)

  it("reports an unknown topic, without creating it", function()
    for _ = 1, 2 do
      local ok, err = ts.partition_leaders(addr, "admin.nope")
      assert.is_nil(ok)
      assert.equal("partition_leaders: unknown topic admin.nope", err)
    end
  end)

  it("fails create_topics within its timeout: the mock has no controller", function()
    local r, ms = timed(ts.create_topics, addr, {"admin.created:2"}, {timeout = 1000})
    assert.is_nil(r[1])
    assert.matches("^create_topics: ", r[2])
    assert.is_true(ms < 7000, ms .. " ms")
  end)

  it("raises on malformed topic lists and options", function()
    local bad = {
      {{}, "array of 1..10000 names"},
      {{"a:0"}, "partitions must be 1..100000"},
      {{"a:x"}, "partitions must be 1..100000"},
      {{":3"}, "1..249 characters"},
      {{("t"):rep(250)}, "1..249 characters"},
      {{7}, "topics%[1%] must be a string"},
      {{"a"}, "opts.replication", {replication = 0}},
      {{"a"}, "opts.config", {config = {["x.y"] = {}}}},
      {{"a"}, "opts.timeout", {timeout = 0}},
    }
    for _, case in ipairs(bad) do
      local ok, err = pcall(ts.create_topics, addr, case[1], case[3])
      assert.is_false(ok)
      assert.matches(case[2], err)
    end
    assert.has_error(function() ts.delete_topics(addr, "a") end)
    assert.has_error(function() ts.brokers(addr, {timeout = "soon"}) end)
  end)
end)

describe("testsupport admin against an unreachable broker", function()
  local NOBODY = "127.0.0.1:1"

  -- Each call gives up at its timeout and says why: the refused connection,
  -- not only the timeout it led to.
  local function check(r, ms, fn, bound)
    assert.is_nil(r[1])
    assert.matches("^" .. fn .. ": ", r[2])
    assert.matches("Connection refused", r[2], 1, true)
    assert.is_true(ms >= bound - 100 and ms < bound + 5000, fn .. " took " .. ms .. " ms")
  end

  it("create_topics", function()
    local r, ms = timed(ts.create_topics, NOBODY, {"a:3", "b"}, {timeout = 1500})
    check(r, ms, "create_topics", 1500)
  end)

  it("delete_topics", function()
    local r, ms = timed(ts.delete_topics, NOBODY, {"a"}, {timeout = 1500})
    check(r, ms, "delete_topics", 1500)
  end)

  it("partition_leaders and brokers", function()
    local r, ms = timed(ts.partition_leaders, NOBODY, "a", {timeout = 1000})
    check(r, ms, "partition_leaders", 1000)
    r, ms = timed(ts.brokers, NOBODY, {timeout = 1000})
    check(r, ms, "brokers", 1000)
  end)
end)

-- On a single-node Kafka from spec/support/kafka.sh when KROUTE_TEST_BROKER=kafka
-- (`make test` runs this file again in its kafka suite); pending otherwise.
describe("testsupport admin on real Kafka", function()
  local env = require "support.env"
  local broker, bootstrap
  local prefix = "ts-admin."

  setup(function()
    if not env.real then return end
    broker = env.broker({})
    bootstrap = broker.addr
  end)

  teardown(function()
    if broker then broker.stop() end
  end)

  env.it_real("creates topics ready to produce to at once, then deletes them", function()
    local a, b = prefix .. "a", prefix .. "b"
    assert(ts.create_topics(bootstrap, {a .. ":3", b}, {config = {["retention.ms"] = "600000"}}))
    local leaders = assert(ts.partition_leaders(bootstrap, a))
    assert.same({0, 1, 2}, sorted_keys(leaders))
    local ids = {}
    for _, br in ipairs(assert(ts.brokers(bootstrap))) do ids[br.id] = true end
    for p = 0, 2 do assert.is_true(ids[leaders[p]], "leader of " .. p) end
    assert.same({0}, sorted_keys(assert(ts.partition_leaders(bootstrap, b))))

    local recs = {}
    for i = 1, 30 do recs[i] = {key = "k" .. i, value = "v" .. i} end
    assert.equal(30, ts.produce(bootstrap, a, recs))
    local sum = 0
    for _, hw in pairs(assert(ts.high_watermarks(bootstrap, a))) do sum = sum + hw end
    assert.equal(30, sum)

    local ok, err = ts.create_topics(bootstrap, {a .. ":3"})
    assert.is_nil(ok)
    assert.matches(a, err, 1, true)
    assert(ts.create_topics(bootstrap, {a .. ":5"}, {exist_ok = true}))

    assert(ts.delete_topics(bootstrap, {a, b}))
    ok, err = ts.partition_leaders(bootstrap, a)
    assert.is_nil(ok)
    assert.equal("partition_leaders: unknown topic " .. a, err)
    ok, err = ts.delete_topics(bootstrap, {a})
    assert.is_nil(ok)
    assert.matches("^delete_topics: ", err)
    assert(ts.delete_topics(bootstrap, {a}, {missing_ok = true}))
  end)

  env.it_real("refuses a replication factor above the broker count", function()
    local n = #assert(ts.brokers(bootstrap))
    local ok, err = ts.create_topics(bootstrap, {prefix .. "r"}, {replication = n + 1})
    assert.is_nil(ok)
    assert.matches("^create_topics: ", err)
  end)
end)

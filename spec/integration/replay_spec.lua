-- kroute replay: DLQ records back to their original topics (or --to), with
-- their key, value and headers; a second run replays nothing twice; an
-- explicit offset range replays on purpose.
local env = require "support.env"
local ts = env.ts

describe("kroute replay", function()
  local broker

  setup(function()
    broker = env.broker{"orders.dlq:2", "orders:2", "elsewhere:1"}
    local recs = {}
    for i = 1, 5 do
      recs[i] = {key = "k" .. i, value = "v" .. i, partition = i % 2, headers = {
        {"trace", "t" .. i}, {"kafka_dlt-original-topic", "orders"},
        {"kafka_dlt-original-offset", tostring(i)}, {"kafka_dlt-exception-message", "boom"},
        {"kroute_route", "r"}}}
    end
    recs[6] = {key = "x", value = "no origin", partition = 0}
    ts.produce(broker.addr, "orders.dlq", recs)
  end)
  teardown(function() broker.stop() end)

  it("sends dead letters back to their original topic without the DLQ headers", function()
    local code, out = env.run_cmd{"replay", "--brokers", broker.addr, "orders.dlq"}
    assert.equal(0, code, out)
    assert.matches("replayed 5 of 6 record%(s%) from orders.dlq to their original topics; "
                   .. "1 skipped, 0 failed", out)
    local got = env.consume(broker.addr, "orders", 5, 15000)
    assert.equal(5, #got)
    local by_key = {}
    for _, r in ipairs(got) do by_key[r.key] = r end
    for i = 1, 5 do
      local r = by_key["k" .. i]
      assert.equal("v" .. i, r.value)
      assert.same({{"trace", "t" .. i}}, r.headers)
    end
  end)

  it("replays nothing twice unless a range is asked for", function()
    local code, out = env.run_cmd{"replay", "--brokers", broker.addr, "orders.dlq"}
    assert.equal(0, code, out)
    assert.matches("replayed 0 of 0 record", out)
    assert.equal(5, #env.consume(broker.addr, "orders", 5, 5000))
    code, out = env.run_cmd{"replay", "--brokers", broker.addr, "--partition", "1",
                            "--from-offset", "0", "--until-offset", "2", "--to", "elsewhere",
                            "orders.dlq"}
    assert.equal(0, code, out)
    assert.matches("replayed 2 of 2 record%(s%) from orders.dlq to elsewhere", out)
    local got = env.consume(broker.addr, "elsewhere", 2, 10000)
    assert.same({"k1", "k3"}, {got[1].key, got[2].key})
  end)

  it("counts without producing on --dry-run and rejects bad usage with exit 2", function()
    local code, out = env.run_cmd{"replay", "--brokers", broker.addr, "--dry-run",
                                  "--from-offset", "0", "orders.dlq"}
    assert.equal(0, code, out)
    assert.matches("would replay 5 of 6", out)
    assert.equal(2, (env.run_cmd{"replay", "orders.dlq"}))
    assert.equal(2, (env.run_cmd{"replay", "--brokers", broker.addr, "--from-offset", "-3",
                                 "orders.dlq"}))
  end)
end)

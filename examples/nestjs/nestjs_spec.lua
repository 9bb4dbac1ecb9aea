-- The NestJS example's handlers without Kafka or NestJS: the replies a
-- ClientKafka caller would get, and the enrich route's user.get request
-- answered by a scripted reply. (spec/integration/nestjs_spec.lua runs the
-- same routes against real NestJS apps.)
local testing = require "kroute.testing"
local FILE = "examples/nestjs/routes.yaml"

describe("nestjs example", function()
  local math_route = assert(testing.route(FILE, "math"))
  local print_route = assert(testing.route(FILE, "print"))
  local enrich = assert(testing.route(FILE, "enrich"))

  it("answers sum and max the way the NestJS math service does", function()
    assert.equal("6", math_route:run{topic = "sum", value = "[1,2,3]"}.reply)
    assert.equal("9", math_route:run{topic = "max", value = "[4,9,2]"}.reply)
  end)

  it("echoes the key, data and header a caller sent", function()
    local res = math_route:run(testing.message{topic = "echo", key = "k1", value = '{"a":1}',
                                          headers = {h = "hv"}})
    assert.is_true(res.ok, res.error)
    assert.same({data = {a = 1}, key = "k1", h = "hv"}, testing.json.decode(res.reply))
    -- the reply record keeps its key and header, beside NestJS's own headers
    assert.equal("k1", res.reply_key)
    -- (and the caller's correlation id: run() sent the message as a request)
    assert.same({{"h", "hv"}, {"kafka_correlationId", "test-correlation-id"},
                 {"kafka_nest-is-disposed", "\0"}}, res.reply_headers)
  end)

  it("fails a bad request with the handler's error, and an unknown pattern as NestJS does", function()
    local res = math_route:run{topic = "sum", value = "not a list"}
    assert.is_false(res.ok)
    assert.matches("expected a list of numbers", res.error)
    res = math_route:run{topic = "fail", value = "x"}
    assert.matches("boom: x", res.error)
    res = math_route:run{topic = "mul", value = "[2,3]"}
    assert.is_false(res.ok)
    assert.equal("There is no matching message handler defined in the remote service.",
                 res.error)
  end)

  it("passes printed events on to print.seen", function()
    local res = print_route:run{topic = "print", value = "hello"}
    assert.is_true(res.ok, res.error)
    assert.same({"print.seen", "hello"}, {res.records[1].topic, res.records[1].value})
  end)

  it("enriches an order with the user a NestJS service returns", function()
    local res = enrich:run(testing.message{topic = "orders", key = "o1",
                                           value = {id = "o1", userId = 7, amount = 1500}},
                           {replies = {["user.get"] = {id = 7, name = "Minji", tier = "gold"}}})
    assert.is_true(res.ok, res.error)
    assert.same({"user.get", '{"id":7}'}, {res.requests[1].pattern, res.requests[1].value})
    local out = res.records[1]
    assert.equal("order.enriched", out.topic)
    assert.equal("7", out.key)
    assert.same({orderId = "o1", amount = 1500, user = {id = 7, name = "Minji", tier = "gold"}},
                out:json())
  end)

  it("fails the order when user.get does not answer", function()
    local res = enrich:run(testing.message{topic = "orders", value = {id = "o2", userId = 8}},
                           {replies = {["user.get"] = function() return nil, "timeout" end}})
    assert.is_false(res.ok)
    assert.matches("user.get failed for user 8: timeout", res.error)
    assert.equal(0, #res.records)
  end)
end)

-- NestJS-style handlers through the real C core: service tables, msg.data,
-- the reply of a reply: nest route, and kroute.request with scripted replies.
local testing = require "kroute.testing"
local json = testing.json

local F = "spec/unit/fixtures/nest/"

describe("reply: nest handlers", function()
  local svc = assert(testing.handler(F .. "service.lua", {reply = "nest"}))

  it("dispatches on the topic to the service table's function", function()
    local res = svc:run{topic = "sum", value = "[1,2,3]"}
    assert.is_true(res.ok, res.error)
    assert.equal("6", res.reply)
  end)

  it("reads values as NestJS's parser does: JSON objects/arrays, other text as a string", function()
    assert.equal('{"a":1}', svc:run{topic = "echo", value = '{"a":1}'}.reply)
    assert.equal("42", svc:run{topic = "echo", value = "42"}.reply)           -- stays "42"
    assert.equal("{not json", svc:run{topic = "echo", value = "{not json"}.reply)
    assert.is_nil(svc:run{topic = "echo"}.reply)                               -- null value
  end)

  it("serializes replies as NestJS does: numbers in shortest form", function()
    assert.equal("0.75", svc:run{topic = "half", value = "1.5"}.reply)
    assert.equal("3", svc:run{topic = "half", value = "6"}.reply)
  end)

  it("replies with the first returned value only and still produces emits", function()
    local res = svc:run{topic = "shout", value = "hi"}
    assert.equal("HI", res.reply)
    assert.equal(1, #res.records)
    assert.same({"audit", "shouted hi"}, {res.records[1].topic, res.records[1].value})
  end)

  it("fails with NestJS's error text for a topic the table has no function for", function()
    local res = svc:run{topic = "mul", value = "[1]"}
    assert.is_false(res.ok)
    assert.equal("There is no matching message handler defined in the remote service.",
                 res.error)
  end)

  it("reports a handler error as the run's error", function()
    local res = svc:run{topic = "fail", value = "1"}
    assert.is_false(res.ok)
    assert.matches("no way", res.error)
  end)
end)

describe("reply: nest routes, events and requests (the outcome kroute run has)", function()
  local F2 = "spec/unit/fixtures/nest/service.lua"
  local with_to = assert(testing.handler(F2, {reply = "nest", to = "seen"}))
  local without_to = assert(testing.handler(F2, {reply = "nest"}))

  it("answers a request with the first returned value; emits still go out", function()
    local res = with_to:run{topic = "shout", value = "hi"}
    assert.is_true(res.is_request)
    assert.equal("HI", res.reply)
    assert.same({"audit"}, {res.records[1].topic})
    assert.equal(1, #res.records)
  end)

  it("sends an event's returned values to `to`, and gives no reply", function()
    local res = with_to:run({topic = "shout", value = "hi"}, {raw = true})
    assert.is_false(res.is_request)
    assert.is_nil(res.reply)
    local got = {}
    for _, r in ipairs(res.records) do got[#got + 1] = r.topic .. "=" .. r.value end
    assert.same({"audit=shouted hi", "seen=HI", "seen=ignored second value"}, got)
  end)

  it("drops an event's returned values where the route has no `to`", function()
    local res = without_to:run({topic = "shout", value = "hi"}, {raw = true})
    assert.is_true(res.ok, res.error)
    assert.is_nil(res.reply)
    assert.equal(1, #res.records)
    assert.equal("audit", res.records[1].topic)
  end)

  it("fails a run on a route without `to` whose output has no topic", function()
    local h = assert(testing.handler(F2, {}))
    local res = h:run{topic = "shout", value = "hi"}
    assert.is_false(res.ok)
    assert.matches("has no 'to' topic", res.error)
    assert.equal(0, #res.records)
  end)
end)

describe("kroute.request", function()
  local caller = assert(testing.handler(F .. "caller.lua", {to = "out"}))

  it("yields for each request and resumes with the reply, parsed as NestJS does", function()
    local res = caller:run({topic = "orders", value = "v"}, {replies = {
      ["user.get"] = {id = 7, name = "Ann"},
      count = function(v) return "12" end,
    }})
    assert.is_true(res.ok, res.error)
    local out = res.records[1]:json()
    assert.same({id = 7, name = "Ann"}, out.a)
    assert.equal("12", out.b)     -- text stays text
    assert.is_nil(out.c)
    assert.equal("no scripted reply for pattern 'gone'", out.cerr)
    assert.equal("v", out.v)      -- the message is still valid after the yields
  end)

  it("records what was requested: pattern, value and key", function()
    local res = caller:run({topic = "orders", value = "v"}, {replies = {}})
    assert.equal(3, #res.requests)
    assert.same({"user.get", '{"id":7}', "u7"},
                {res.requests[1].pattern, res.requests[1].value, res.requests[1].key})
    assert.same({"count", "x"}, {res.requests[2].pattern, res.requests[2].value})
  end)

  it("returns nil and the error a scripted reply gives", function()
    local res = caller:run({topic = "orders", value = "v"}, {replies = {
      ["user.get"] = function() return nil, "timeout" end }})
    assert.equal("timeout", res.records[1]:json().aerr)
  end)

  it("refuses to yield from a coroutine the handler created", function()
    local h = assert(testing.handler(F .. "nested.lua", {to = "out"}))
    local res = h:run{topic = "t", value = "1"}
    assert.is_true(res.ok, res.error)
    local out = res.records[1]:json()
    assert.is_false(out.ok)
    assert.matches("kroute.request can only be called while a handler runs", out.err)
  end)
end)

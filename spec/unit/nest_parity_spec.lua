-- kroute against NestJS's own behaviour, vector by vector. The expected values
-- in spec/unit/nest_vectors.lua were produced by NestJS 11.2 itself (its
-- KafkaParser, KafkaRequestSerializer, KafkaRequestDeserializer, ServerKafka
-- and ClientKafka, with kafkajs's byte encoding) by the generator committed
-- beside it, spec/unit/nest_vectors.js; they port NestJS's specs
-- (kafka-parser, kafka-request.serializer, kafka-response.deserializer,
-- incoming-request.deserializer) and add the cases kroute users meet. Every
-- check here runs kroute's C core (msg.data / msg.nest, the reply of a
-- `reply: nest` route, kroute.request, the JSON encoder). The differences
-- kroute keeps on purpose are asserted as such, and listed in the README.
local testing = require "kroute.testing"
local json = testing.json
local V = require "unit.nest_vectors"

local F = "spec/unit/fixtures/nest/"

-- a headers list {{name, value}...} sorted by name, wire order kept within a name
local function sorted(list)
  local idx = {}
  for i, h in ipairs(list) do idx[i] = {h, i} end
  table.sort(idx, function(a, b)
    if a[1][1] ~= b[1][1] then return a[1][1] < b[1][1] end
    return a[2] < b[2]
  end)
  local out = {}
  for i, e in ipairs(idx) do out[i] = {e[1][1], e[1][2] ~= json.null and e[1][2] or nil} end
  return out
end

-- Value bytes compared as NestJS wrote them, except that a JSON object's key
-- order is not kroute's to keep (Lua tables have none): objects compare decoded.
local function wire_value(v)
  if type(v) == "string" and v:sub(1, 1) == "{" then
    local t = json.decode(v)
    if t then return t end
  end
  return v
end

local function message(vec, topic)
  local headers = {}
  for i, h in ipairs(vec.headers) do headers[i] = {h[1], h[2] == nil and json.null or h[2]} end
  return {topic = topic or "sum", key = vec.key, value = vec.value, headers = headers}
end

it("the vectors come from NestJS 11.2", function()
  assert.matches("^11%.2%.", V.nestjs)
end)

describe("KafkaParser: what a NestJS handler reads (msg.data, msg.nest)", function()
  local view = assert(testing.handler(F .. "view.lua", {to = "out"}))
  for _, vec in ipairs(V.parse) do
    it(vec.name, function()
      local res = view:run(message(vec))
      assert.is_true(res.ok, res.error)
      local got = {}
      for i, r in ipairs(res.records) do got[i] = r.value end
      if vec.data == "message" then
        -- a null value: NestJS's payload is then the whole message (its
        -- KafkaRequestDeserializer's `value ?? message`); kroute keeps
        -- msg.data nil, and msg.nest is that message
        assert.equal("null", got[1])
      else
        assert.equal(vec.data, got[1])
      end
      assert.same({vec.nest_key, vec.nest_value, vec.nest_headers}, {got[2], got[3], got[4]})
    end)
  end
end)

describe("KafkaParser on replies: what kroute.request returns", function()
  local caller = assert(testing.handler(F .. "request_eval.lua", {to = "out"}))
  for _, vec in ipairs(V.parse) do
    if vec.value ~= nil then
      it(vec.name, function()
        local raw = vec.value
        local res = caller:run({topic = "t", value = "1"},
                               {replies = {sum = function() return raw end}})
        assert.is_true(res.ok, res.error)
        assert.equal(vec.nest_value, res.records[1].value)
      end)
    end
  end
end)

describe("KafkaRequestSerializer: the reply of a reply: nest route", function()
  local h = assert(testing.handler(F .. "reply_eval.lua", {reply = "nest"}))
  for _, vec in ipairs(V.serialize) do
    it(vec.name, function()
      local res = h:run{topic = "sum", value = vec.lua, headers = {
        {"kafka_correlationId", "corr-1"}, {"kafka_replyTopic", "sum.reply"},
        {"kafka_replyPartition", "3"}}}
      assert.is_true(res.ok, res.error)
      assert.is_true(res.is_request)
      -- (the reply partition is the request's: the dispatcher's, see nestjs_spec)
      assert.same({vec.reply.key, wire_value(vec.reply.value), sorted(vec.reply.headers)},
                  {res.reply_key, wire_value(res.reply), sorted(res.reply_headers)})
    end)
  end
end)

describe("KafkaRequestSerializer: the request kroute.request sends", function()
  local caller = assert(testing.handler(F .. "request_eval.lua", {to = "out"}))
  for _, vec in ipairs(V.serialize) do
    it(vec.name, function()
      local res = caller:run({topic = "t", value = vec.lua}, {replies = {sum = "ok"}})
      assert.is_true(res.ok, res.error)
      local req = res.requests[1]
      assert.same({vec.request.key, wire_value(vec.request.value), vec.request.partition,
                   sorted(vec.request.headers)},
                  {req.key, wire_value(req.value), req.partition, sorted(req.headers)})
    end)
  end
end)

describe("ServerKafka: which records are answered, and how", function()
  local svc = assert(testing.handler(F .. "service.lua", {reply = "nest"}))
  for _, vec in ipairs(V.serve) do
    it(vec.name, function()
      local res = svc:run(message({headers = vec.headers, value = "[1,2,3]"},
                                  vec.handled and "sum" or "mul"), {raw = true})
      assert.equal(vec.reply ~= nil, res.is_request)
      if vec.handled then
        assert.is_true(res.ok, res.error)
        if vec.reply then assert.equal(vec.reply.value, res.reply) end
      else
        assert.is_false(res.ok)
      end
      if vec.reply then
        assert.same(sorted(vec.reply.headers), sorted(res.reply_headers))
      end
    end)
  end
end)

describe("ClientKafka: what a caller gets from a reply", function()
  local caller = assert(testing.handler(F .. "request_eval.lua", {to = "out"}))
  for _, vec in ipairs(V.respond) do
    local rec = vec.records[#vec.records]
    local err
    for _, h in ipairs(rec.headers) do if h[1] == "kafka_nest-err" then err = h[2] end end
    -- one record with a value or an error: the unit harness scripts exactly
    -- that; a null final value and streams go through the requester
    -- (request_spec, on a broker)
    if #vec.records == 1 and (rec.value ~= nil or err) then
      it(vec.name, function()
        local res = caller:run({topic = "t", value = "1"}, {replies = {
          sum = function() if err then return nil, err end return rec.value end}})
        assert.is_true(res.ok, res.error)
        if err then
          -- NestJS rejects with the header KafkaParser-decoded; kroute returns
          -- nil and its text, or an RpcException's message
          local e = json.decode(vec.error)
          assert.equal("null", res.records[1].value)
          assert.equal(type(e) == "table" and e.message or e, res.records[2].value)
        else
          assert.same(vec.nexts, {res.records[1].value})
        end
      end)
    end
  end
end)

describe("Number.prototype.toString: the JSON text of every double", function()
  it("matches node for " .. #V.numbers .. " doubles (fixed cases, powers, random bits)", function()
    local bad = {}
    for _, v in ipairs(V.numbers) do
      local d = string.unpack("<d", v[1])
      local got = json.encode(d)
      if got ~= v[2] then bad[#bad + 1] = ("%q: node %s, kroute %s"):format(v[1], v[2], got) end
    end
    assert.same({}, bad)
  end)

  it("writes header numbers the same way", function()
    local h = assert(testing.handler(F .. "reply_eval.lua", {to = "out"}))
    local res = h:run{topic = "t", value = 'kroute.record{value = "v", headers = {a = 1e21, b = 3.0, c = 1e-7}}'}
    assert.is_true(res.ok, res.error)
    assert.same({"1e+21", "3", "1e-7"}, {res.records[1].header.a, res.records[1].header.b,
                                         res.records[1].header.c})
  end)
end)

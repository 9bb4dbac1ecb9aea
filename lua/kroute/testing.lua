-- kroute.testing: run handlers in busted specs without Kafka.
-- The handler runs in the same sandboxed VM, with the same C bindings and
-- the same record rules (key and headers inherited, `to` as the default
-- topic) as in `kroute run`; only the Kafka I/O is left out.
--
--   local testing = require "kroute.testing"
--   local h = testing.route("examples/payments/routes.yaml", "ranking")
--   local res = h:run(testing.message{topic = "payment.completed", key = "u1",
--                                     value = {userId = "u1", amount = 1200}})
--   assert.is_true(res.ok); assert.equal("ranking.points", res.records[1].topic)
local native = require "kroute.native"

local testing = {}

local function lua_dir()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*)/kroute/testing%.lua$") or "lua"
end

--- A fake consumed message. `value` may be a table (sent as JSON text), or
-- left out for a tombstone; `headers` is {name = value | {values}} or
-- {{name, value}, ...}, where json.null (or a missing value in the list
-- form) is a null header value.
function testing.message(t)
  assert(type(t) == "table", "testing.message takes a table")
  local m = {}
  for k, v in pairs(t) do m[k] = v end
  m.topic = m.topic or "test"
  m.partition = m.partition or 0
  m.offset = m.offset or 0
  m.timestamp = m.timestamp or 0
  if type(m.value) == "table" then m.value = native.json.encode(m.value) end
  return m
end

local Handler = {}
Handler.__index = Handler

local function decode_record(rec)
  function rec.json() return native.json.decode(rec.value) end
  local by_name = {}
  for _, h in ipairs(rec.headers) do
    by_name[h[1]] = by_name[h[1]] or h[2]
  end
  rec.header = by_name
  return rec
end

--- Runs the handler over one message. Returns {ok, error, trace, records,
-- requests} where each record is {topic, key, value (nil: a null value),
-- headers = {{name, value}...} (a null header value is json.null),
-- header = {name = first value}, partition} plus a :json()
-- helper, and each request {pattern, value, key} is a kroute.request call.
-- opts.replies scripts the answers to kroute.request: pattern -> value (a
-- table is sent as JSON, as a NestJS service would) or a function of the
-- request's value text returning value | nil, err. A pattern without an
-- entry answers nil, "no scripted reply for pattern '...'".
-- On a reply="nest" handler the message is a NestJS request, as a
-- ClientKafka sends it: kafka_correlationId "test-correlation-id",
-- kafka_replyTopic "<topic>.reply" and kafka_replyPartition "0" are added
-- unless the message has a kafka_correlationId header already. With
-- opts.raw = true the message goes as it is: without those headers it is
-- an event (returned values go to `to`, or nowhere, as in `kroute run`).
local function as_request(m)
  local list = {}
  if m.headers then
    if #m.headers > 0 or next(m.headers) == nil then
      for _, h in ipairs(m.headers) do list[#list + 1] = h end
    else
      for name, v in pairs(m.headers) do
        if type(v) == "table" then
          for _, x in ipairs(v) do list[#list + 1] = {name, x} end
        else
          list[#list + 1] = {name, v}
        end
      end
    end
  end
  for _, h in ipairs(list) do
    if h[1] == "kafka_correlationId" then return m end
  end
  list[#list + 1] = {"kafka_correlationId", "test-correlation-id"}
  list[#list + 1] = {"kafka_replyTopic", m.topic .. ".reply"}
  list[#list + 1] = {"kafka_replyPartition", "0"}
  m.headers = list
  return m
end

function Handler:run(msg, opts)
  local m = testing.message(msg)
  if self.route.reply == "nest" and not (opts and opts.raw) then m = as_request(m) end
  local res = self.vm:handle(m, opts)
  for _, rec in ipairs(res.records) do decode_record(rec) end
  return res
end

function Handler:memory() return self.vm:memory() end
function Handler:close() self.vm:close() end

--- A handler file, with route-like options {to=, name=, timeout_ms=, memory=,
-- reply="nest"}. With reply="nest", run() sends a NestJS request (see
-- as_request above) and the result's `reply` holds the reply
-- bytes a NestJS caller would get, `reply_key` its key, `reply_headers`
-- its headers ({{name, value}...}: the handler's own plus the NestJS ones)
-- and `is_request` whether kroute takes the message for a request (it has
-- a non-empty kafka_correlationId and kafka_replyTopic) rather than an event.
function testing.handler(path, opts)
  opts = opts or {}
  local vm, err = native.vm{
    handler = path, to = opts.to, name = opts.name or path, reply = opts.reply,
    timeout_ms = opts.timeout_ms, memory = opts.memory, lua_dir = lua_dir(),
  }
  if not vm then return nil, err end
  return setmetatable({vm = vm, route = opts}, Handler)
end

--- The handler of route `name` in a route file, with that route's settings.
function testing.route(file, name)
  local cfg, errs = native.load_config(file)
  if not cfg then return nil, table.concat(errs, "\n") end
  for _, r in ipairs(cfg.routes) do
    if r.name == name then
      return testing.handler(r.handler, {
        to = r.to, name = r.name, timeout_ms = r.timeout_ms, memory = r.memory,
        reply = r.reply,
      })
    end
  end
  return nil, ("no route named %q in %s"):format(name, file)
end

testing.json = native.json

return testing

-- One function per pattern, as a NestJS controller has one @MessagePattern
-- method per pattern. msg.data is the value as NestJS parses it (a JSON
-- array/object becomes a table, other text stays a string); the return
-- value is the reply, serialized as NestJS does (6 -> "6", tables as JSON).
local kroute = require "kroute"

local M = {}

local function numbers(msg)
  if type(msg.data) ~= "table" then error("expected a list of numbers, got " .. tostring(msg.value)) end
  return msg.data
end

function M.sum(msg)
  local total = 0
  for _, n in ipairs(numbers(msg)) do total = total + n end
  return total
end

function M.max(msg)
  return math.max(table.unpack(numbers(msg)))
end

-- ClientKafka.send('echo', {key, value, headers}) arrives with that key and
-- those headers; echo them back so the caller can see what kroute saw. The
-- reply record keeps its key and headers, as a NestJS handler's returned
-- {key, value, headers} does (a plain table with a `key` or `value` field
-- would itself be read as such an envelope, as NestJS reads it).
function M.echo(msg)
  return kroute.record{
    key = msg.key,
    value = { data = msg.data, key = msg.key, h = msg.headers.h },
    headers = { h = msg.headers.h },
  }
end

function M.fail(msg)
  error("boom: " .. tostring(msg.value))
end

-- Takes three seconds: long enough to kill kroute between request and reply.
function M.slow(msg)
  kroute.log.info("slow request started")
  local t = kroute.clock()
  while kroute.clock() - t < 3 do end
  return { done = true, id = type(msg.data) == "table" and msg.data.id or nil }
end

return M

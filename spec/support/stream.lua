-- spec/support/stream.lua - keyed sequence streams for the fault and cluster
-- specs: produce events {"s": seq} over a number of keys, and check an
-- output topic for loss, duplicates and per-key order.
local env = require "support.env"
local ts = env.ts
local json = require("kroute.native").json

local stream = {}

--- Records in `topic` (sum of the high watermarks).
function stream.produced(addr, topic)
  local n = 0
  for _, v in pairs(ts.high_watermarks(addr, topic) or {}) do n = n + v end
  return n
end

--- Produces events seq from..to keyed "k"..(seq % keys); value {"s":seq}.
-- Every poison_every-th event is poison: bad UTF-8, bad JSON or {"poison":true}.
function stream.produce(addr, topic, from, to, keys, poison_every)
  local batch = {}
  for s = from, to do
    local poison = poison_every and s % poison_every == 0
    local value
    if poison and s % 4 == 0 then value = '{"s":' .. s .. ',"name":"\255\254"}' -- bad UTF-8
    elseif poison and s % 2 == 0 then value = "not json " .. s
    else value = json.encode{s = s, poison = poison or nil} end
    batch[#batch + 1] = {key = "k" .. (s % keys), value = value}
  end
  assert(ts.produce(addr, topic, batch))
end

--- Output check: every seq of 1..n present; per key, first occurrences in
-- output order are increasing. Waits (bounded) until all n are there.
-- Returns distinct, total, order_violations, missing (list of seqs).
function stream.verify(addr, topic, n, timeout_ms)
  local recs
  local seen, distinct = {}, 0
  env.wait_for(function()
    recs = env.consume(addr, topic, 0, 5000)
    seen, distinct = {}, 0
    for _, r in ipairs(recs) do
      local v = json.decode(r.value)
      if not seen[v.s] then seen[v.s] = true; distinct = distinct + 1 end
    end
    return distinct >= n
  end, timeout_ms or 60000)
  local last, first_seen, violations = {}, {}, 0
  for _, r in ipairs(recs) do -- (partition, offset) order: one key, one partition
    local v = json.decode(r.value)
    if not first_seen[v.s] then
      first_seen[v.s] = true
      if last[v.k] and v.s < last[v.k] then violations = violations + 1 end
      last[v.k] = v.s
    end
  end
  local missing = {}
  for s = 1, n do if not seen[s] then missing[#missing + 1] = s end end
  return distinct, #recs, violations, missing
end

return stream

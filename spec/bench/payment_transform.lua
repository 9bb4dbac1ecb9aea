-- The seed's payment transform, as the benchmarks run it: decode, double
-- the amount, add a field, encode, key the output by userId.
local kroute = require "kroute"
return function(msg)
  local ev = assert(msg:json())
  ev.amount = ev.amount * 2
  ev.routed_by = "kroute"
  return kroute.record{ key = ev.userId, value = ev }
end

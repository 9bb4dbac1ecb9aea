-- The seed's payment transform as a naive loop runs it (passthrough.c with
-- a script, the second reference of throughput_bench.lua): lua-cjson, no
-- sandbox, no limits. Returns the output key and value.
local cjson = require "cjson"
return function(value)
  local ev = cjson.decode(value)
  ev.amount = ev.amount * 2
  ev.routed_by = "kroute"
  return ev.userId, cjson.encode(ev)
end

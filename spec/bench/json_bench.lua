-- spec/bench/json_bench.lua - kroute's JSON codec against lua-cjson, run by
-- `make bench`: the seed's payment transform (decode, amount*2, add a
-- field, encode) on the same event N times with each, alternated over 3
-- rounds; prints events/s and the ratio. lua-cjson is the usual choice in
-- Lua gateways (OpenResty); kroute keeps its own for exact 64-bit integers,
-- arrays that survive a round trip and strict UTF-8 (see README).
package.cpath = ".build/lua/?.so;" .. package.cpath
local kjson = require("kroute.native").json
local ok, cjson = pcall(require, "cjson")
if not ok then
  print("json: lua-cjson is not installed (apt-get install lua-cjson); skipped")
  return
end
local N = tonumber(os.getenv("BENCH_JSON_N") or "200000")
local event = '{"paymentId":"p00012345","userId":"u4321","concertId":"c7","seat":"A-42",'
  .. '"amount":15000,"status":"COMPLETED"}'

local function run(codec)
  local t0 = os.clock()
  for _ = 1, N do
    local ev = codec.decode(event)
    ev.amount = ev.amount * 2
    ev.routed_by = "kroute"
    codec.encode(ev)
  end
  return N / (os.clock() - t0)
end

local best = {kroute = 0, cjson = 0}
for _ = 1, 3 do
  best.kroute = math.max(best.kroute, run(kjson))
  best.cjson = math.max(best.cjson, run(cjson))
end
print(("json: payment transform, best of 3 x %d: kroute.json %.0f/s, lua-cjson %.0f/s, "
       .. "ratio %.2f"):format(N, best.kroute, best.cjson, best.kroute / best.cjson))

-- spec/bench/json_bench.lua - kroute's JSON codec against lua-cjson, run by
-- `make bench`: the seed's payment transform (decode, amount*2, add a
-- field, encode) on the same event N times with each, alternated over 3
-- rounds; prints events/s and the ratio. lua-cjson is the usual choice in
-- Lua gateways (OpenResty); kroute keeps its own for exact 64-bit integers,
-- arrays that survive a round trip and strict UTF-8 (see spec/bench/README.md).
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

-- A handler that reads one field of a bigger event (a filter, a router on
-- a type field): decode everything then index, against msg:json(key), which
-- checks the whole text but builds only that member (the same decoder).
local big = {}
for i = 1, 30 do big[#big + 1] = ('"field%d":{"id":%d,"tags":["a","b"],"note":"n%d"}'):format(i, i, i) end
local big_event = '{' .. table.concat(big, ",") .. ',"type":"payment.completed"}'
local function read_type(by_path)
  local t0 = os.clock()
  for _ = 1, N // 4 do
    local t = by_path and kjson.decode(big_event, "type") or kjson.decode(big_event).type
    assert(t == "payment.completed")
  end
  return N // 4 / (os.clock() - t0)
end
local whole, path = 0, 0
for _ = 1, 3 do
  whole = math.max(whole, read_type(false))
  path = math.max(path, read_type(true))
end
print(("json: one field of a %d-byte event, best of 3 x %d: decode everything %.0f/s, "
       .. "msg:json(\"type\") %.0f/s, ratio %.2f"):format(#big_event, N // 4, whole, path, path / whole))

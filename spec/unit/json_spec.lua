-- The JSON codec (core/codec/json.c) behind kroute.json and msg:json().
local native = require "kroute.native"
local json = native.json

local function decode_ok(s)
  local v, err = json.decode(s)
  assert(v ~= nil, err)
  return v
end

local function decode_err(s)
  local v, err = json.decode(s)
  assert.is_nil(v, "expected " .. ("%q"):format(s) .. " to be rejected")
  assert.is_string(err)
  return err
end

local function roundtrip(s)
  return json.encode(decode_ok(s))
end

describe("json.encode", function()
  it("encodes scalars", function()
    assert.equal("true", json.encode(true))
    assert.equal("false", json.encode(false))
    assert.equal("null", json.encode(json.null))
    assert.equal('"hi"', json.encode("hi"))
    assert.equal("42", json.encode(42))
    assert.equal("-7", json.encode(-7))
  end)

  it("keeps integers exact up to 2^63-1", function()
    assert.equal("9223372036854775807", json.encode(math.maxinteger))
    assert.equal("-9223372036854775808", json.encode(math.mininteger))
    assert.equal("9007199254740993", json.encode(9007199254740993)) -- 2^53 + 1
  end)

  it("prints floats in their shortest round-trip form", function()
    assert.equal("0.1", json.encode(0.1))
    assert.equal("0.75", json.encode(0.75))
    assert.equal("0.30000000000000004", json.encode(0.1 + 0.2))
    assert.equal("0.3333333333333333", json.encode(1 / 3))
    assert.equal("123456789012.5", json.encode(123456789012.5))
    assert.equal("-2.5", json.encode(-2.5))
    assert.equal("1.5e+300", json.encode(1.5e300))
    for _, x in ipairs{0.1, 1 / 3, 2 / 3, 1e-300, 123.456, 2 ^ -20, math.pi, 1.5e300} do
      assert.equal(x, tonumber(json.encode(x)), "round trip of " .. ("%.17g"):format(x))
    end
  end)

  it("prints small and tiny floats the way JavaScript does", function()
    assert.equal("1e-7", json.encode(1e-7))
    assert.equal("5e-324", json.encode(5e-324))
  end)

  it("prints integral floats without a fraction", function()
    assert.equal("6", json.encode(6.0))
    assert.equal("-3", json.encode(-3.0))
    assert.equal("0", json.encode(0.0))
    assert.equal("0", json.encode(-0.0))
    assert.equal("10000000000000000", json.encode(1e16))
    assert.equal("9007199254740992", json.encode(2.0 ^ 53))
  end)

  it("escapes what JSON requires and keeps UTF-8 as is", function()
    assert.equal([["a\"b\\c\n\r\t\b\f"]], json.encode("a\"b\\c\n\r\t\b\f"))
    assert.equal([["\u0001\u001f\u0000"]], json.encode("\1\31\0"))
    assert.equal('"/é€😀"', json.encode("/é€😀"))
  end)

  it("encodes sequences as arrays and other tables as objects", function()
    assert.equal("[1,2,3]", json.encode({1, 2, 3}))
    assert.equal('["a",["b",[]]]', json.encode({"a", {"b", json.array{}}}))
    assert.equal('{"a":1}', json.encode({a = 1}))
    local decoded = decode_ok(json.encode({a = 1, b = {c = "d"}, [5] = true}))
    assert.same({a = 1, b = {c = "d"}, ["5"] = true}, decoded)
  end)

  it("encodes a table with holes or extra keys as an object with string keys", function()
    assert.same({["1"] = 1, ["3"] = 3}, decode_ok(json.encode({1, nil, 3})))
    assert.same({["1"] = "a", x = 2}, decode_ok(json.encode({"a", x = 2})))
    assert.equal('{"1.5":true}', json.encode({[1.5] = true}))
  end)

  it("encodes an empty plain table as {} and a marked one as []", function()
    assert.equal("{}", json.encode({}))
    assert.equal("[]", json.encode(json.array({})))
    assert.equal("[]", json.encode(json.array()))
    assert.equal("[1,2]", json.encode(json.array({1, 2})))
  end)

  it("encodes json.null inside tables", function()
    assert.equal('{"a":null}', json.encode({a = json.null}))
    assert.equal("[1,null,3]", json.encode({1, json.null, 3}))
  end)

  it("raises on NaN and infinity", function()
    for _, x in ipairs{0 / 0, math.huge, -math.huge} do
      local ok, err = pcall(json.encode, x)
      assert.is_false(ok)
      assert.matches("NaN and infinity have no JSON form", err)
    end
    local ok, err = pcall(json.encode, {price = 0 / 0})
    assert.is_false(ok)
    assert.matches("NaN", err)
  end)

  it("raises on values with no JSON form", function()
    local ok, err = pcall(json.encode, print)
    assert.is_false(ok)
    assert.matches("cannot encode to JSON: a function has no JSON form", err)
    ok, err = pcall(json.encode, {f = coroutine.create(print)})
    assert.is_false(ok)
    assert.matches("a thread has no JSON form", err)
    ok, err = pcall(json.encode, {[true] = 1})
    assert.is_false(ok)
    assert.matches("object keys must be strings or numbers", err)
  end)

  it("raises on a cycle instead of looping", function()
    local t = {}
    t.self = t
    local ok, err = pcall(json.encode, t)
    assert.is_false(ok)
    assert.matches("nested too deep", err)
  end)

  it("has a nesting limit: 150 levels encode, 1000 do not", function()
    local function nest(n)
      local t = {}
      for _ = 1, n do t = {t} end
      return t
    end
    assert.equal(string.rep("[", 150) .. "{}" .. string.rep("]", 150), json.encode(nest(150)))
    assert.is_false(pcall(json.encode, nest(1000)))
  end)
end)

describe("json.decode", function()
  it("decodes scalars", function()
    assert.equal(true, decode_ok("true"))
    assert.equal(false, decode_ok("false"))
    assert.equal(json.null, decode_ok("null"))
    assert.equal("x", decode_ok('"x"'))
    assert.equal(12, decode_ok(" 12 "))
  end)

  it("decodes integers as Lua integers, exactly", function()
    local v = decode_ok("9223372036854775807")
    assert.equal("integer", math.type(v))
    assert.equal(math.maxinteger, v)
    v = decode_ok("-9223372036854775808")
    assert.equal(math.mininteger, v)
    assert.equal(9007199254740993, decode_ok("9007199254740993"))
    assert.equal("integer", math.type(decode_ok("0")))
  end)

  it("decodes numbers with a fraction or exponent as floats", function()
    assert.equal("float", math.type(decode_ok("1.0")))
    assert.equal(0.1, decode_ok("0.1"))
    assert.equal(100.0, decode_ok("1e2"))
    assert.equal("float", math.type(decode_ok("1e2")))
    assert.equal(-2.5e-3, decode_ok("-2.5E-3"))
  end)

  it("decodes integers beyond 64 bits as floats instead of wrapping", function()
    local v = decode_ok("9223372036854775808")
    assert.equal("float", math.type(v))
    assert.equal(2.0 ^ 63, v)
    assert.equal(1e30, decode_ok("1000000000000000000000000000000"))
  end)

  it("decodes objects and arrays", function()
    assert.same({a = {1, 2, {b = "c"}}, d = {}}, decode_ok('{"a":[1,2,{"b":"c"}],"d":{}}'))
    assert.same({}, decode_ok(" [ ] "))
    assert.same({x = json.null}, decode_ok('{"x":null}'))
  end)

  it("decodes escapes", function()
    assert.equal('"\\/\b\f\n\r\t', decode_ok([["\"\\\/\b\f\n\r\t"]]))
    assert.equal("A", decode_ok([["\u0041"]]))
    assert.equal("a\0b", decode_ok([["a\u0000b"]]))
  end)

  it("decodes \\u escapes to UTF-8 of 2 and 3 bytes", function()
    assert.equal("é", decode_ok([["\u00e9"]]))
    assert.equal("é", decode_ok([["\u00E9"]]))
    assert.equal("€", decode_ok([["\u20ac"]]))
    assert.equal("\u{FFFF}", decode_ok([["\uffff"]]))
  end)

  it("joins surrogate pairs into one 4-byte character", function()
    assert.equal("😀", decode_ok([["\ud83d\ude00"]]))
    assert.equal("😀", decode_ok([["\uD83D\uDE00"]]))
    assert.equal("\u{10000}\u{10FFFF}", decode_ok([["\ud800\udc00\udbff\udfff"]]))
    assert.equal("x😀y", decode_ok([["x\ud83d\ude00y"]]))
  end)

  it("never produces invalid UTF-8 from a lone surrogate", function()
    for _, s in ipairs{[["\ud83d"]], [["\ude00x"]], [["\ud83d\u0041"]]} do
      local v, err = json.decode(s)
      if v ~= nil then
        assert.is_truthy(utf8.len(v), ("%s decoded to invalid UTF-8 bytes %s")
                         :format(s, table.concat({v:byte(1, -1)}, " ")))
      else
        assert.matches("surrogate", err)
      end
    end
  end)

  it("keeps non-ASCII input bytes as they are", function()
    assert.equal("héllo 😀", decode_ok('"héllo 😀"'))
  end)

  it("marks decoded arrays so [] round-trips while {} stays an object", function()
    assert.equal("[]", roundtrip("[]"))
    assert.equal("{}", roundtrip("{}"))
    local doc = decode_ok(json.encode({a = decode_ok("[]"), b = decode_ok("{}"),
                                       c = decode_ok("[[]]")}))
    assert.equal("[]", json.encode(doc.a))
    assert.equal("{}", json.encode(doc.b))
    assert.equal("[[]]", json.encode(doc.c))
    assert.equal('{"items":[]}', roundtrip('{"items":[]}'))
  end)

  it("round-trips numbers exactly", function()
    for _, s in ipairs{"0", "-1", "9223372036854775807", "-9223372036854775808", "0.1", "0.75",
                       "6", "1.5", "123456.789", "0.30000000000000004", "1e+21"} do
      assert.equal(s, roundtrip(s))
    end
    assert.equal("6", roundtrip("6.0"))
    assert.equal("100", roundtrip("1e2"))
  end)

  it("round-trips a nested document", function()
    local doc = '{"id":9007199254740993,"tags":["a","b"],"n":null,"ok":true,"price":0.75,' ..
                '"nested":{"list":[1,[2,[3,[]]]],"empty":{}}}'
    local v = decode_ok(doc)
    assert.same(v, decode_ok(json.encode(v)))
    assert.equal(9007199254740993, v.id)
    assert.equal("[1,[2,[3,[]]]]", json.encode(v.nested.list))
  end)

  describe("errors", function()
    local cases = {
      {"", "bad JSON: expected a value at end of input"},
      {"   ", "bad JSON: expected a value at end of input"},
      {"[1,2", "bad JSON: expected ',' or ']' at end of input"},
      {"[1 2]", "bad JSON: expected ',' or ']' at byte 4"},
      {'{"a" 1}', "bad JSON: expected ':' at byte 6"},
      {'{"a":1,}', "bad JSON: expected a string key at byte 8"},
      {"{1:2}", "bad JSON: expected a string key at byte 2"},
      {'{"a":1 "b":2}', "bad JSON: expected ',' or '}' at byte 8"},
      {"[1,]", "bad JSON: unexpected character at byte 4"},
      {"01", "bad JSON: leading zero in number at byte 1"},
      {"-01", "bad JSON: leading zero in number at byte 2"},
      {"-", "bad JSON: bad number at end of input"},
      {"1.", "bad JSON: bad number at end of input"},
      {"1.e5", "bad JSON: bad number at byte 3"},
      {"1e", "bad JSON: bad number at end of input"},
      {"+1", "bad JSON: unexpected character at byte 1"},
      {".5", "bad JSON: unexpected character at byte 1"},
      {"NaN", "bad JSON: unexpected character at byte 1"},
      {"Infinity", "bad JSON: unexpected character at byte 1"},
      {"tru", "bad JSON: unexpected character at byte 1"},
      {"[nul]", "bad JSON: unexpected character at byte 2"},
      {"'a'", "bad JSON: unexpected character at byte 1"},
      {'"abc', "bad JSON: unterminated string at end of input"},
      {'"a\\qb"', "bad JSON: bad escape at byte 3"},
      {'"\\u12G4"', "bad JSON: bad \\u escape at byte 4"},
      {'"\\u12"', "bad JSON: bad \\u escape at byte 4"},
      {'"a\nb"', "bad JSON: control character in string at byte 3"},
      {"1 2", "bad JSON: trailing characters at byte 3"},
      {'{"a":1}x', "bad JSON: trailing characters at byte 8"},
      {"[", "bad JSON: expected a value at end of input"},
    }
    for _, c in ipairs(cases) do
      local shown = ("%q"):format(c[1]):gsub("\\\n", "\\n")
      it("rejects " .. shown .. " with the byte position", function()
        assert.equal(c[2], decode_err(c[1]))
      end)
    end

    it("has a nesting limit that reports where it was hit", function()
      local ok_doc = string.rep("[", 150) .. string.rep("]", 150)
      assert.is_table(json.decode(ok_doc))
      local err = decode_err(string.rep("[", 1000) .. string.rep("]", 1000))
      assert.matches("^bad JSON: nested too deep at byte %d+$", err)
      err = decode_err(string.rep('{"a":', 1000) .. "1" .. string.rep("}", 1000))
      assert.matches("^bad JSON: nested too deep at byte %d+$", err)
    end)
  end)
end)

describe("json.array", function()
  it("marks and returns the same table", function()
    local t = {1}
    assert.equal(t, json.array(t))
    assert.equal("[1]", json.encode(t))
  end)

  it("rejects non-tables", function()
    assert.is_false(pcall(json.array, "x"))
  end)

  it("rejects strings that are not well-formed UTF-8, with the byte position", function()
    assert.equal("café 😀", json.decode('"caf\xc3\xa9 \xf0\x9f\x98\x80"'))
    for _, bad in ipairs{'"\xff"', '"\xc3"', '"\xc0\xaf"', '"\xed\xa0\x80"',
                         '"\xf4\x90\x80\x80"', '"\xe2\x82"'} do
      local v, err = json.decode(bad)
      assert.is_nil(v)
      assert.equal("bad JSON: invalid UTF-8 at byte 2", err)
    end
  end)
end)

-- The codec inside a handler VM, where the route's `memory` cap applies:
-- whatever the codec builds must count against it and be given back when
-- an allocation fails.
describe("json under a VM's memory cap", function()
  local MiB = 1024 * 1024
  local scratch = require "support.scratch"
  local dir
  setup(function() dir = scratch.dir("json") end)
  teardown(function() scratch.remove(dir) end)

  local function write(name, text) return scratch.write(dir, name, text) end

  local function resident_bytes()
    local f = assert(io.open("/proc/self/statm"))
    local pages = f:read("a"):match("^%d+ (%d+)")
    f:close()
    return tonumber(pages) * 4096
  end

  it("decoding that runs out of memory leaks nothing", function()
    local vm = assert(native.vm{handler = write("decode.lua", [[
return function(msg)
  local failed = 0
  for _ = 1, 20 do
    local ok, err = pcall(msg.json, msg)
    if not ok and err:match("not enough memory") then failed = failed + 1 end
  end
  return tostring(failed)
end
]]), to = "out", memory = 2 * MiB, lua_dir = "lua"})
    -- escapes make the decoder unescape through its scratch buffer: 2 MiB of
    -- string bytes do not fit next to the rest under a 2 MiB cap
    local inputs = {'["' .. string.rep("a\\n", MiB) .. '"]',
                    '{"' .. string.rep("a\\n", MiB) .. '":1}'}
    collectgarbage()
    local before = resident_bytes()
    for _ = 1, 2 do
      for _, value in ipairs(inputs) do
        local res = vm:handle{topic = "in", value = value}
        assert(res.ok, res.error)
        assert.equal("20", res.records[1].value) -- every decode hit the cap
      end
    end
    -- 80 failed decodes of 2 MiB each: a leak shows as ~160 MiB here
    local grown = resident_bytes() - before
    assert.is_true(grown < 32 * MiB, ("resident memory grew by %d bytes"):format(grown))
    vm:close()
  end)

  -- Encoding a shared table repeats it: small in Lua, huge as text. These
  -- run in a child process with its address space limited to 1 GiB, so an
  -- encoder that grows outside the cap dies there instead of eating the
  -- machine; under the cap each one is an ordinary memory error.
  local handler = [[
local kroute = require "kroute"
local function value(which)
  if which == "shared" then -- 600 references to one 4 MiB string
    local s, t = string.rep("x", 4 * 1024 * 1024), {}
    for i = 1, 600 do t[i] = s end
    return t
  end
  local t = {} -- a tree of 2^40 leaves, 40 tables in Lua
  for _ = 1, 40 do t = {t, t} end
  return t
end
return {
  handle = function(msg)
    local which, how = msg.value:match("(%a+) (%a+)")
    if how == "return" then return value(which) end
    local ok, err = pcall(kroute.json.encode, value(which))
    return kroute.json.encode{ok = ok, err = tostring(err)}
  end,
  reload_state = function() return value("tree") end,
}
]]

  local function isolated(value)
    local text = scratch.child(([[
local native = require "kroute.native"
local vm = assert(native.vm{handler = %q, to = "out", memory = 16 * 1024 * 1024,
                            lua_dir = "lua"})
local out = {}
if %q == "state" then
  out.state, out.err = vm:export_state()
else
  local res = vm:handle{topic = "in", value = %q}
  out.ok, out.err = res.ok, res.error
  out.value = res.records[1] and res.records[1].value
end
print("RESULT " .. native.json.encode(out))
]]):format(write("encode.lua", handler), value, value), 60, {vmem_kib = 1048576})
    local result = text:match("RESULT (%b{})")
    assert(result, "the child process died: " .. text)
    return json.decode(result)
  end

  for _, which in ipairs{"shared", "tree"} do
    it("kroute.json.encode of a " .. which .. " table fails with a memory error", function()
      local out = isolated(which .. " encode")
      assert(out.ok, out.err)
      local v = json.decode(out.value)
      assert.is_false(v.ok)
      assert.equal("not enough memory", v.err)
    end)

    it("returning a " .. which .. " table fails the run on the cap", function()
      local out = isolated(which .. " return")
      assert.is_false(out.ok)
      assert.matches("out of memory", out.err)
    end)
  end

  it("a reload_state() too big for the cap fails like any memory error", function()
    local out = isolated("state")
    assert.is_nil(out.state)
    assert.matches("not enough memory %(in reload_state%)", out.err)
  end)
end)

describe("json.decode with a path", function()
  local doc = '{"a":{"b":[1,{"c":"x"}],"n":9007199254740993},"s":"\\u00e9\\n","z":null,"t":true}'

  it("gives the member at the path exactly as a full decode has it", function()
    local full = decode_ok(doc)
    assert.same(full.a, json.decode(doc, "a"))
    assert.same(full.a.b, json.decode(doc, "a", "b"))
    assert.equal(9007199254740993, json.decode(doc, "a", "n"))
    assert.equal(math.type(full.a.n), math.type(json.decode(doc, "a", "n")))
    assert.equal(full.s, json.decode(doc, "s"))
    assert.equal(json.null, json.decode(doc, "z"))
    assert.is_true(json.decode(doc, "t"))
    -- an array read this way still encodes as an array
    assert.equal("[1,{\"c\":\"x\"}]", json.encode(json.decode(doc, "a", "b")))
  end)

  it("gives nil for a member that is not there, or under something that is not an object", function()
    assert.is_nil(json.decode(doc, "nope"))
    assert.is_nil(json.decode(doc, "a", "nope"))
    assert.is_nil(json.decode(doc, "s", "x"))     -- a string has no members
    assert.is_nil(json.decode(doc, "a", "b", "c")) -- nor has an array (keys are names)
    assert.is_nil(json.decode("[1,2]", "a"))
    assert.is_nil(json.decode("{}", "a"))
  end)

  it("takes the last of a repeated key, as a full decode does", function()
    assert.equal(2, json.decode('{"a":1,"a":2}', "a"))
    assert.is_nil(json.decode('{"a":{"b":1},"a":{"c":2}}', "a", "b"))
  end)

  it("matches keys by their unescaped text", function()
    assert.equal(5, json.decode('{"a\\"b":5}', 'a"b'))
    assert.equal(6, json.decode('{"\\u00e9":6}', "\u{e9}"))
  end)

  it("still rejects bad JSON anywhere in the text, with the same error", function()
    for _, s in ipairs{'{"a":1,"b":tru}', '{"a":1} x', '{"a":1,"b":"\255"}', '{"b":[1,2}',
                       '{"a":1,' .. ("["):rep(2000) .. ("]"):rep(2000) .. '}'} do
      local _, full_err = json.decode(s)
      local v, err = json.decode(s, "a")
      assert.is_nil(v, s)
      assert.equal(full_err, err)
    end
  end)

  it("refuses keys that are not strings and paths longer than 16", function()
    assert.has_error(function() json.decode("{}", 1) end)
    local keys = {}
    for i = 1, 17 do keys[i] = "k" end
    assert.has_error(function() json.decode("{}", table.unpack(keys)) end)
  end)
end)

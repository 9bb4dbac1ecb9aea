-- Handlers in the real sandbox (core/runtime/vm.c, message.c, record.c, lapi.c):
-- the `kroute` API, what a return value becomes, the sandbox, the limits,
-- and load errors. Fixtures: spec/unit/fixtures/handlers/*.lua.
local native = require "kroute.native"
local json = native.json

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/unit"
local H = HERE .. "/fixtures/handlers/"
local LUALIB = HERE .. "/fixtures/lualib"
local MiB = 1024 * 1024

local function vm_for(name, opts)
  opts = opts or {}
  local vm, err = native.vm{
    handler = H .. name, name = opts.name or name,
    to = opts.to == nil and "out" or opts.to or nil,
    timeout_ms = opts.timeout_ms, memory = opts.memory, lua_dir = opts.lua_dir or "lua",
  }
  assert(vm, err)
  return vm
end

local function load_error(name, opts)
  opts = opts or {}
  local vm, err = native.vm{handler = H .. name, to = "out", lua_dir = opts.lua_dir or "lua",
                            timeout_ms = opts.timeout_ms}
  assert.is_nil(vm, "expected " .. name .. " to fail to load")
  assert.is_string(err)
  return err
end

-- a message with a key and a header, so inheritance is visible
local function input(value, extra)
  local m = {topic = "in", partition = 2, offset = 40, key = "k1", value = value,
             timestamp = 1700000000123, headers = {{"trace", "t-1"}}}
  for k, v in pairs(extra or {}) do m[k] = v end
  return m
end

local function run(vm, value, extra)
  return vm:handle(input(value, extra))
end

local function ok_run(vm, value, extra)
  local res = run(vm, value, extra)
  assert(res.ok, "handler failed: " .. tostring(res.error))
  assert.is_nil(res.error)
  return res
end

local function failed_run(vm, value, extra)
  local res = run(vm, value, extra)
  assert.is_false(res.ok)
  assert.is_string(res.error)
  assert.same({}, res.records) -- a failed run produces nothing
  return res
end

local function values(res)
  local out = {}
  for i, r in ipairs(res.records) do out[i] = r.value == nil and "<null>" or r.value end
  return out
end

local function escape(s) return (s:gsub("%p", "%%%0")) end

-- Runs `script` in a separate Lua process with the same native module, for
-- behaviour that may crash or hang the process; returns output and exit code.
local subprocess = require("support.scratch").child

local function quoted(s) return ("%q"):format(s) end

describe("handlers", function()
  describe("the message", function()
    it("exposes topic, partition, offset, key, value and timestamp with their types", function()
      local vm = vm_for("fields.lua")
      local res = ok_run(vm, "v", {topic = "orders", partition = 3, offset = 99, key = "k",
                                   timestamp = 1700000000000})
      local f = json.decode(res.records[1].value)
      assert.equal("orders", f.topic)
      assert.equal(3, f.partition)
      assert.equal(99, f.offset)
      assert.equal("k", f.key)
      assert.equal("v", f.value)
      assert.equal(1700000000000, f.timestamp)
      assert.same({topic = "string", partition = "integer", offset = "integer",
                   key = "string", value = "string", timestamp = "integer",
                   headers = "table"}, f.types)
      assert.equal("nil", f.unknown_field)
      assert.equal("kroute.message(orders/3@99)", f.text)
      vm:close()
    end)

    it("gives nil key and value when the record has none, and empty headers", function()
      local vm = vm_for("fields.lua")
      local res = ok_run(vm, nil, {key = false, headers = false})
      local f = json.decode(res.records[1].value)
      assert.equal("nil", f.types.key)
      assert.equal("nil", f.types.value)
      assert.equal("{}", json.encode(f.headers))
      vm:close()
    end)

    it("keeps binary bytes in key and value", function()
      local vm = vm_for("fields.lua")
      local res = ok_run(vm, "a\0b\255", {key = "\0\1"})
      -- JSON text is UTF-8: the encoder writes 0xFF (not UTF-8) as U+FFFD,
      -- as Node's Buffer.toString reads it; the raw key stays as it was
      local text = res.records[1].value
      assert.is_truthy(text:find('"value":"a\\u0000b\u{FFFD}"', 1, true), text)
      assert.is_truthy(text:find('"key":"\\u0000\\u0001"', 1, true), text)
      assert.equal("\0\1", res.records[1].key) -- inherited byte for byte
      vm:close()
    end)

    it("maps headers name -> string, a repeated name -> list in order", function()
      local vm = vm_for("fields.lua")
      local res = ok_run(vm, "v", {headers = {{"a", "1"}, {"b", "2"}, {"a", "3"}, {"a", "4"}}})
      local f = json.decode(res.records[1].value)
      assert.same({a = {"1", "3", "4"}, b = "2"}, f.headers)
      -- the {name = value | {values}} input form gives the same view
      res = ok_run(vm, "v", {headers = {x = "1", y = {"2", "3"}}})
      f = json.decode(res.records[1].value)
      assert.same({x = "1", y = {"2", "3"}}, f.headers)
      vm:close()
    end)

    it("is read-only", function()
      local vm = vm_for("errors.lua")
      local res = failed_run(vm, "readonly")
      assert.matches("errors%.lua:7: message fields are read%-only", res.error)
      vm:close()
    end)

    it("msg:json() decodes the value", function()
      local vm = vm_for("json_method.lua")
      local res = ok_run(vm, '{"amount": 1250, "user": "u1"}')
      assert.equal(1, #res.records)
      assert.same({amount = 1250, points = 12, user = "u1"}, json.decode(res.records[1].value))
      vm:close()
    end)

    it("msg:json() returns nil and the parse error for bad JSON or no value", function()
      local vm = vm_for("json_probe.lua")
      local res = ok_run(vm, "[1,2")
      assert.same({ok = false, err = "bad JSON: expected ',' or ']' at end of input"},
                  json.decode(res.records[1].value))
      res = ok_run(vm, '{"a":1} x')
      assert.same({ok = false, err = "bad JSON: trailing characters at byte 9"},
                  json.decode(res.records[1].value))
      res = ok_run(vm, nil)
      assert.same({ok = false, err = "message has no value"}, json.decode(res.records[1].value))
      vm:close()
    end)

    it("msg:json(key, ...) reads one member at a path, nil when absent, nil, err for bad JSON", function()
      local vm = vm_for("json_field.lua")
      local res = ok_run(vm, '{"big":[1,2,3],"user":{"id":7,"name":"a"},"x":"\\u00e9"}')
      assert.same({user = 7, tier = false, err = false}, json.decode(res.records[1].value))
      -- the rest of the text is still checked, as msg:json() would
      res = ok_run(vm, '{"user":{"id":7},"x":tru}')
      assert.same({user = false, tier = false, err = "bad JSON: unexpected character at byte 22"},
                  json.decode(res.records[1].value))
      res = ok_run(vm, '[{"user":1}]')
      assert.same({user = false, tier = false, err = false}, json.decode(res.records[1].value))
      vm:close()
    end)

    it("an error() on bad input fails the run with the handler's file:line", function()
      local vm = vm_for("json_method.lua")
      local res = failed_run(vm, "not json")
      assert.equal(H .. "json_method.lua:5: bad payment: bad JSON: unexpected character "
                   .. "at byte 1", res.error)
      assert.is_string(res.trace)
      assert.matches("json_method%.lua:5", res.trace)
      vm:close()
    end)
  end)

  describe("return values", function()
    local vm
    before_each(function() vm = vm_for("values.lua") end)
    after_each(function() vm:close() end)

    it("nothing or nil filters the message out", function()
      assert.same({}, ok_run(vm, "none").records)
      assert.same({}, ok_run(vm, "explicit_nil").records)
    end)

    it("a string is the raw value, sent to `to` with the input's key and headers", function()
      local res = ok_run(vm, "string")
      assert.equal(1, #res.records)
      local r = res.records[1]
      assert.equal("out", r.topic)
      assert.equal("raw text", r.value)
      assert.equal("k1", r.key)
      assert.same({{"trace", "t-1"}}, r.headers)
      assert.is_nil(r.partition) -- partitioned by key
    end)

    it("numbers and booleans become JSON text in shortest form", function()
      assert.same({"42"}, values(ok_run(vm, "integer")))
      assert.same({"0.75"}, values(ok_run(vm, "float")))
      assert.same({"6"}, values(ok_run(vm, "integral_float")))
      assert.same({"true"}, values(ok_run(vm, "boolean")))
    end)

    it("a table becomes JSON text", function()
      local v = ok_run(vm, "table").records[1].value
      assert.same({id = 7, tags = {"a", "b"}}, json.decode(v))
      assert.same({"[]"}, values(ok_run(vm, "empty_array")))
    end)

    it("json.null gives a record with a null value (a tombstone)", function()
      local res = ok_run(vm, "null")
      assert.equal(1, #res.records)
      assert.is_nil(res.records[1].value)
      assert.equal("k1", res.records[1].key)
    end)

    it("several values fan out in order; nil among them is skipped", function()
      local res = ok_run(vm, "several")
      assert.same({"one", "2", '{"three":3}'}, values(res))
      for _, r in ipairs(res.records) do assert.equal("out", r.topic) end
      assert.same({"first", "third"}, values(ok_run(vm, "holes")))
    end)

    it("a value with no JSON form fails the run", function()
      local res = failed_run(vm, "function_value")
      assert.matches("cannot encode to JSON: a function has no JSON form", res.error)
      res = failed_run(vm, "nested_function")
      assert.matches("a function has no JSON form", res.error)
      -- the VM keeps working
      assert.same({"raw text"}, values(ok_run(vm, "string")))
    end)
  end)

  it("a value returned on a route without `to` fails the run, as in production", function()
    local vm = vm_for("values.lua", {to = false})
    local res = run(vm, "string")
    assert.is_false(res.ok, "the run should fail: no topic for the returned value")
    assert.matches("no 'to' topic", res.error or "")
    assert.same({}, res.records)
    vm:close()
  end)

  describe("kroute.record", function()
    local vm
    before_each(function() vm = vm_for("records.lua") end)
    after_each(function() vm:close() end)

    it("sets topic, key, value, headers and partition", function()
      local r = ok_run(vm, "full").records[1]
      assert.equal("audit", r.topic)
      assert.equal("k2", r.key)
      assert.equal('{"n":1}', r.value)
      assert.equal(3, r.partition)
      -- names sorted, lists expanded in order, numbers as text; input headers replaced
      assert.same({{"a", "x"}, {"a", "y"}, {"b", "2"}, {"n", "5"}}, r.headers)
    end)

    it("defaults to the route's `to`, the input's key and headers", function()
      local r = ok_run(vm, "defaults").records[1]
      assert.equal("out", r.topic)
      assert.equal("k1", r.key)
      assert.equal("v", r.value)
      assert.same({{"trace", "t-1"}}, r.headers)
      assert.is_nil(r.partition)
    end)

    it("key = false means no key; headers = {} means no headers", function()
      local r = ok_run(vm, "no_key").records[1]
      assert.is_nil(r.key)
      assert.same({{"trace", "t-1"}}, r.headers)
      r = ok_run(vm, "no_headers").records[1]
      assert.equal("k1", r.key)
      assert.same({}, r.headers)
    end)

    it("without a value is a tombstone", function()
      local r = ok_run(vm, "null_value").records[1]
      assert.equal("compacted", r.topic)
      assert.equal("k", r.key)
      assert.is_nil(r.value)
    end)

    it("mixes with plain values in one return", function()
      local res = ok_run(vm, "mixed")
      assert.equal(2, #res.records)
      assert.equal("out", res.records[1].topic)
      assert.equal("plain", res.records[1].value)
      assert.equal("side", res.records[2].topic)
      assert.equal("explicit", res.records[2].value)
    end)

    it("rejects unknown fields, empty topics, bad partitions and bad headers", function()
      assert.equal(H .. "records.lua:15: kroute.record: unknown field 'prio' (expected topic, "
                   .. "key, value, headers, partition)", failed_run(vm, "unknown_field").error)
      assert.equal(H .. "records.lua:16: kroute.record: topic must be a non-empty string",
                   failed_run(vm, "empty_topic").error)
      assert.equal(H .. "records.lua:17: partition must be a non-negative integer",
                   failed_run(vm, "bad_partition").error)
      assert.equal(H .. "records.lua:18: kroute.record: headers must be a table",
                   failed_run(vm, "bad_headers").error)
      assert.matches("header 'h' must be a string or a list of strings, not boolean",
                     failed_run(vm, "bad_header_value").error)
    end)
  end)

  describe("kroute.emit", function()
    local vm
    before_each(function() vm = vm_for("emits.lua") end)
    after_each(function() vm:close() end)

    it("produces before the returned values, with key, headers and partition options",
       function()
      local res = ok_run(vm, "order")
      assert.equal(3, #res.records)
      local e1, e2, ret = res.records[1], res.records[2], res.records[3]
      assert.equal("first", e1.topic)
      assert.equal("e1", e1.value)
      assert.equal("k1", e1.key)
      assert.same({{"trace", "t-1"}}, e1.headers)
      assert.equal("second", e2.topic)
      assert.equal('{"n":2}', e2.value)
      assert.equal("k2", e2.key)
      assert.same({{"h", "v"}}, e2.headers)
      assert.equal(1, e2.partition)
      assert.equal("out", ret.topic)
      assert.equal("returned", ret.value)
    end)

    it("key = false drops the key; no options inherit key and headers", function()
      local r = ok_run(vm, "no_key").records[1]
      assert.equal("t", r.topic)
      assert.is_nil(r.key)
      r = ok_run(vm, "inherit").records[1]
      assert.equal("k1", r.key)
      assert.same({{"trace", "t-1"}}, r.headers)
    end)

    it("without a value emits a tombstone", function()
      local r = ok_run(vm, "null_value").records[1]
      assert.equal("t", r.topic)
      assert.is_nil(r.value)
    end)

    it("emits nothing when the handler fails afterwards", function()
      local res = failed_run(vm, "then_fail")
      assert.equal(H .. "emits.lua:14: failed after emitting", res.error)
    end)

    it("requires a topic string", function()
      assert.matches("emits%.lua:16: bad argument #1 to 'emit' %(string expected, got number%)",
                     failed_run(vm, "bad_topic").error)
    end)
  end)

  describe("kroute helpers", function()
    it("kroute.json is the JSON codec, also as require 'kroute.json'", function()
      local vm = vm_for("kjson.lua")
      local r = ok_run(vm, '{"a":[],"n":9007199254740993}').records[1]
      local v = json.decode(r.value)
      assert.is_true(v.same_module)
      assert.is_true(v.null_is_null)
      assert.same({a = {}, n = 9007199254740993}, json.decode(v.roundtrip))
      assert.matches('"a":%[%]', v.roundtrip)
      assert.equal("bad JSON: expected a value at end of input", v.err)
      assert.matches('"empty":%[%]', r.value)
      vm:close()
    end)

    it("kroute.now() is milliseconds since the Unix epoch", function()
      local vm = vm_for("now.lua")
      local before = os.time() * 1000
      local now = tonumber(ok_run(vm, "x").records[1].value)
      local after = os.time() * 1000 + 1000
      assert.equal("integer", math.type(now))
      assert.is_true(now >= before and now <= after, tostring(now))
      vm:close()
    end)

    it("kroute.log.* and print write tagged lines to the log", function()
      local out, code = subprocess(([[
        local native = require "kroute.native"
        local vm = assert(native.vm{handler = %s, name = "logroute", to = "o"})
        local res = vm:handle{topic = "orders", partition = 2, offset = 7, value = "x"}
        io.stderr:write("RESULT ", tostring(res.ok), " ", tostring(res.records[1].value), "\n")
      ]]):format(quoted(H .. "log.lua")))
      assert.equal(0, code, out)
      assert.matches("RESULT true logged", out)
      local where = "%[handler%] route=logroute topic=orders partition=2 offset=7: "
      assert.matches("info%s+" .. where .. "info line 1 true\n", out)
      assert.matches("warn%s+" .. where .. "warn line\n", out)
      assert.matches("error%s+" .. where .. "error line\n", out)
      assert.matches("info%s+" .. where .. "printed line\n", out)
    end)
  end)

  describe("the sandbox", function()
    it("has no io, debug, package, dofile, loadfile or string.dump", function()
      local vm = vm_for("sandbox.lua")
      local s = json.decode(ok_run(vm, "x").records[1].value)
      assert.equal("nil", s.io)
      assert.equal("nil", s.debug)
      assert.equal("nil", s.package)
      assert.equal("nil", s.dofile)
      assert.equal("nil", s.loadfile)
      assert.equal("nil", s.string_dump)
      assert.equal("nil", s.method_dump)
      for _, lib in ipairs{"string", "table", "math", "utf8", "coroutine"} do
        assert.equal("table", s[lib], lib)
      end
      vm:close()
    end)

    it("keeps only os.clock, os.date, os.difftime and os.time", function()
      local vm = vm_for("sandbox.lua")
      local s = json.decode(ok_run(vm, "x").records[1].value)
      assert.same({"clock", "date", "difftime", "time"}, s.os_keys)
      assert.equal("nil", s.os_execute)
      assert.equal("nil", s.os_getenv)
      assert.equal("nil", s.os_exit)
      assert.equal("nil", s.os_remove)
      assert.equal("integer", s.os_time)
      vm:close()
    end)

    it("load compiles text chunks, with or without name and env", function()
      local vm = vm_for("loading.lua")
      assert.same({"42"}, values(ok_run(vm, "env")))
      assert.same({"2"}, values(ok_run(vm, "text"))) -- load("return 1 + 1")
      vm:close()
    end)

    it("load refuses binary chunks, whatever mode is asked for", function()
      local vm = vm_for("loading.lua")
      assert.same({"nil|attempt to load a binary chunk (mode is 't')"},
                  values(ok_run(vm, "binary_mode_b")))
      assert.same({"nil|attempt to load a binary chunk (mode is 't')"},
                  values(ok_run(vm, "binary")))
      vm:close()
    end)

    describe("require", function()
      local vm
      before_each(function() vm = vm_for("requires.lua", {lua_dir = LUALIB}) end)
      after_each(function() vm:close() end)

      local function req(name) return ok_run(vm, name).records[1].value end

      it("finds modules beside the handler", function()
        assert.equal("beside_mod", req("beside_mod"))
        assert.equal("true", req("cached")) -- loaded once, then cached
      end)

      it("finds modules in the lua/ folder, dotted names and init.lua", function()
        assert.equal("shared_mod", req("shared_mod"))
        assert.equal("sub.deep", req("sub.deep"))
        assert.equal("pkg", req("pkg"))
      end)

      it("gives the built-in kroute, kroute.json and the opened libraries", function()
        assert.equal("table", req("kroute"))
        assert.equal("table", req("kroute.json"))
        assert.equal("table", req("string"))
        assert.equal("table", req("os"))
      end)

      it("does not find io, debug, package or C modules", function()
        for _, name in ipairs{"io", "debug", "package", "kroute.native"} do
          local v = req(name)
          assert.matches("^error: module '" .. escape(name) .. "' not found", v)
        end
        assert.matches("no file '" .. escape(H) .. "io%.lua'", req("io"))
        assert.matches("no file '" .. escape(LUALIB) .. "/io%.lua'", req("io"))
      end)

      it("refuses path-like names", function()
        assert.equal("error: module '../handlers/beside_mod' not found (bad module name)",
                     req("../handlers/beside_mod"))
        assert.equal("error: module '/etc/passwd' not found (bad module name)",
                     req("/etc/passwd"))
      end)

      it("searches only the handler's folder and the given lua folder", function()
        local other = vm_for("requires.lua", {lua_dir = "lua"})
        assert.matches("^error: module 'shared_mod' not found",
                       ok_run(other, "shared_mod").records[1].value)
        other:close()
      end)
    end)

    it("keeps module-level state for the VM's life", function()
      local vm = vm_for("counter.lua")
      assert.same({"beside_mod:1"}, values(ok_run(vm, "a")))
      assert.same({"beside_mod:2"}, values(ok_run(vm, "b")))
      local fresh = vm_for("counter.lua")
      assert.same({"beside_mod:1"}, values(ok_run(fresh, "a")))
      assert.same({"beside_mod:3"}, values(ok_run(vm, "c")))
      fresh:close()
      vm:close()
    end)
  end)

  describe("limits", function()
    it("stops an endless loop at the timeout and keeps the VM usable", function()
      local vm = vm_for("timeout.lua", {timeout_ms = 100})
      local t0 = os.clock()
      local res = failed_run(vm, "spin")
      assert.is_true(os.clock() - t0 < 2, "took " .. (os.clock() - t0) .. "s")
      assert.matches("timeout", res.error)
      assert.equal("timeout: handler ran longer than 100 ms", res.error)
      assert.same({"done"}, values(ok_run(vm, "ok")))
      vm:close()
    end)

    it("stops a handler that catches the timeout error with pcall", function()
      local vm = vm_for("timeout_pcall.lua", {timeout_ms = 100})
      local res = run(vm, "x")
      assert.is_false(res.ok, "handler ran 0.6s past a 100ms timeout: "
                      .. tostring(res.records[1] and res.records[1].value))
      assert.matches("timeout", res.error)
      vm:close()
    end)

    it("stops an endless loop inside a coroutine the handler created", function()
      local out, code = subprocess(([[
        local native = require "kroute.native"
        local vm = assert(native.vm{handler = %s, to = "o", timeout_ms = 100})
        local res = vm:handle{value = "x"}
        print("RESULT", res.ok, res.error)
      ]]):format(quoted(H .. "coroutine_spin.lua")), 3)
      assert.are_not.equal(124, code, "the handler was still running after 3s")
      assert.equal(0, code, out)
      assert.matches("RESULT\tfalse\t[^\n]*timeout", out)
    end)

    it("fails a run that exceeds the memory cap and keeps the VM usable", function()
      local cap = 2 * MiB
      local vm = vm_for("memory.lua", {memory = cap})
      assert.same({"fine"}, values(ok_run(vm, "ok")))
      for _, how in ipairs{"string", "table", "concat"} do
        local res = failed_run(vm, how)
        assert.matches("memory", res.error, how)
        assert.equal("out of memory: the route's Lua memory limit (2097152 bytes) was reached",
                     res.error)
        assert.is_true(vm:memory() <= cap, how .. ": " .. vm:memory())
        assert.same({"fine"}, values(ok_run(vm, "ok")), "after " .. how)
      end
      vm:close()
    end)

    it("stops infinite recursion, through Lua or C frames, and keeps the VM usable", function()
      local vm = vm_for("recursion.lua", {memory = 8 * MiB})
      for _, how in ipairs{"lua", "c"} do
        local res = failed_run(vm, how)
        -- whichever limit comes first: Lua's stack or the route's memory cap
        assert.is_truthy(res.error:match("stack overflow") or res.error:match("out of memory"),
                         how .. ": " .. res.error)
        assert.same({"fine"}, values(ok_run(vm, "ok")), "after " .. how)
      end
      vm:close()
    end)

    it("reports the VM's memory use", function()
      local vm = vm_for("fields.lua")
      local m = vm:memory()
      assert.equal("integer", math.type(m))
      assert.is_true(m > 1000 and m < 2 * MiB, tostring(m))
      vm:close()
    end)

    it("a cap below what the sandbox needs is a load error, not a crash", function()
      local out, code = subprocess(([[
        local native = require "kroute.native"
        local vm, err = native.vm{handler = %s, to = "o", memory = 4 * 1024}
        print("RESULT", vm, err)
      ]]):format(quoted(H .. "fields.lua")))
      assert.equal(0, code, "process died (exit " .. tostring(code) .. "):\n" .. out)
      assert.matches("RESULT\tnil\t[^\n]*memory", out)
    end)
  end)

  describe("errors", function()
    local vm
    before_each(function() vm = vm_for("errors.lua") end)
    after_each(function() vm:close() end)

    it("error(nil) still gives a message", function()
      assert.equal("error(nil) raised without a message", failed_run(vm, "nil").error)
    end)

    it("an error object is shown with its __tostring", function()
      assert.equal("custom error object", failed_run(vm, "table").error)
    end)

    it("string errors and runtime errors carry file:line and a traceback", function()
      local res = failed_run(vm, "string")
      assert.equal(H .. "errors.lua:4: plain failure", res.error)
      assert.matches("traceback", res.trace)
      res = failed_run(vm, "runtime")
      assert.equal(H .. "errors.lua:5: attempt to index a nil value (local 't')", res.error)
    end)

    it("yielding at the top level of a handler fails the run", function()
      assert.matches("handler yielded", failed_run(vm, "yield").error)
      assert.same({"no error"}, values(ok_run(vm, "x")))
    end)

    it("the message used after its handler finished raises", function()
      local keep = vm_for("keep_msg.lua")
      assert.same({"saved"}, values(ok_run(keep, "one")))
      local res = failed_run(keep, "two")
      assert.equal(H .. "keep_msg.lua:7: message used after its handler finished", res.error)
      assert.same({"saved"}, values(ok_run(keep, "three")))
      keep:close()
      keep = vm_for("keep_msg_json.lua")
      ok_run(keep, "{}")
      assert.matches("message used after its handler finished", failed_run(keep, "{}").error)
      keep:close()
    end)
  end)

  describe("loading", function()
    it("calls init once, before the first message", function()
      local vm = vm_for("with_init.lua")
      assert.same({"init,handle"}, values(ok_run(vm, "a")))
      assert.same({"init,handle,handle"}, values(ok_run(vm, "b")))
      vm:close()
    end)

    it("accepts a table with only handle", function()
      local vm = vm_for("table_without_init.lua")
      assert.same({"handled a"}, values(ok_run(vm, "a")))
      vm:close()
    end)

    it("reports an init error with file:line", function()
      assert.equal(H .. "init_error.lua:3: cannot connect to the cache (in init)",
                   load_error("init_error.lua"))
    end)

    it("rejects an init that is not a function", function()
      assert.equal(H .. "init_not_function.lua:1: init must be a function, not string",
                   load_error("init_not_function.lua"))
    end)

    it("reports a syntax error as file:line:", function()
      local err = load_error("syntax_error.lua")
      assert.matches("^" .. escape(H) .. "syntax_error%.lua:5: ", err)
      assert.matches("near 'end'", err)
    end)

    it("reports a runtime error while loading as file:line:", function()
      assert.equal(H .. "load_error.lua:3: attempt to index a nil value (local 'x')",
                   load_error("load_error.lua"))
    end)

    it("rejects a file that returns something other than a handler", function()
      assert.equal(H .. "returns_number.lua:1: a handler file must return a function or a "
                   .. "table with a 'handle' function (it returned number)",
                   load_error("returns_number.lua"))
      assert.equal(H .. "returns_nothing.lua:1: a handler file must return a function or a "
                   .. "table with a 'handle' function (it returned nil)",
                   load_error("returns_nothing.lua"))
    end)

    it("rejects a table without handle, saying it was a table", function()
      local err = load_error("returns_table_without_handle.lua")
      assert.matches("^" .. escape(H) .. "returns_table_without_handle%.lua:1: ", err)
      assert.matches("'handle'", err)
      assert.not_matches("it returned nil", err)
    end)

    it("reports a module that cannot be found at load time", function()
      local err = load_error("requires_missing.lua", {lua_dir = LUALIB})
      assert.matches("^" .. escape(H) .. "requires_missing%.lua:1: module "
                     .. "'no_such_module_anywhere' not found:", err)
    end)

    it("reports a handler file that does not exist", function()
      local err = load_error("no_such_handler.lua")
      assert.matches("no_such_handler%.lua", err)
      assert.matches("No such file or directory", err)
    end)

    it("bounds a never-ending init by the timeout", function()
      local out, code = subprocess(([[
        local native = require "kroute.native"
        local vm, err = native.vm{handler = %s, to = "o", timeout_ms = 100}
        print("RESULT", vm, err)
      ]]):format(quoted(H .. "init_spin.lua")), 3)
      assert.are_not.equal(124, code, "loading the handler was still running after 3s")
      assert.equal(0, code, out)
      assert.matches("RESULT\tnil\t[^\n]*timeout", out)
    end)

    it("a closed VM refuses to run", function()
      local vm = vm_for("values.lua")
      vm:close()
      local ok, err = pcall(vm.handle, vm, input("string"))
      assert.is_false(ok)
      assert.matches("vm is closed", err)
    end)
  end)

  describe("outside a handler run (several VMs in one process)", function()
    -- Each case builds VMs one after another, as reloads and workers do.
    -- Builds six VMs in a row from `fixture` and checks each run's output
    -- record is the emit error, i.e. the emit raised and nothing crashed.
    local function assert_emit_refused(fixture)
      local out, code = subprocess(([[
        local native = require "kroute.native"
        for i = 1, 6 do
          local vm = assert(native.vm{handler = %s, to = "o"})
          print("RESULT", i, vm:handle{value = "x"}.records[1].value)
          io.stdout:flush()
          vm:close()
        end
      ]]):format(quoted(H .. fixture)))
      assert.equal(0, code, "process died (exit " .. tostring(code) .. "):\n" .. out)
      local n = 0
      for _ in out:gmatch("RESULT\t%d\tfalse kroute%.emit can only be called while a handler "
                          .. "runs") do n = n + 1 end
      assert.equal(6, n, out)
    end

    it("kroute.emit at load time raises every time, without crashing", function()
      assert_emit_refused("emit_at_load.lua")
    end)

    it("kroute.emit in a coroutine the handler created raises, without crashing", function()
      assert_emit_refused("emit_in_coroutine.lua")
    end)

    it("print at load time logs a clean line for every VM", function()
      local out, code = subprocess(([[
        local native = require "kroute.native"
        for i = 1, 6 do
          local vm = assert(native.vm{handler = %s, name = "printer", to = "o"})
          vm:close()
        end
      ]]):format(quoted(H .. "print_at_load.lua")))
      assert.equal(0, code, "process died (exit " .. tostring(code) .. "):\n" .. out)
      local n = 0
      for line in out:gmatch("[^\n]+") do
        if line:find("[handler]", 1, true) then
          assert.matches("%[handler%] route=printer: loaded$", line)
          n = n + 1
        end
      end
      assert.equal(6, n, out)
    end)
  end)
end)

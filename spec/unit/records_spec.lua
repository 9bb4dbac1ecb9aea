-- Output records in the real sandbox (core/runtime/record.c, lapi.c, message.c):
-- an emit/request/record that raises leaves nothing behind, the C memory
-- of a run's outputs counts against the route's cap, tombstones can be
-- forwarded, and null header values stay null both ways.
local native = require "kroute.native"
local json = native.json

local MiB = 1024 * 1024

local scratch = require "support.scratch"
local dir
setup(function() dir = scratch.dir("records") end)
teardown(function() scratch.remove(dir) end)

local n = 0
-- A VM running handler source `src` (to = "out" unless opts.to says otherwise).
local function vm_of(src, opts)
  opts = opts or {}
  n = n + 1
  local path = scratch.write(dir, ("h%d.lua"):format(n), src)
  local vm, err = native.vm{handler = path, name = "h" .. n, to = "out", lua_dir = "lua",
                            memory = opts.memory}
  assert(vm, err)
  return vm
end

-- an input with a key and a header, so inheritance is visible
local function input(value, extra)
  local m = {topic = "in", partition = 0, offset = 7, key = "k1", value = value,
             headers = {{"trace", "t-1"}}}
  for k, v in pairs(extra or {}) do m[k] = v end
  return m
end

local function ok_run(vm, msg, opts)
  local res = vm:handle(msg, opts)
  assert(res.ok, "handler failed: " .. tostring(res.error))
  return res
end

describe("a record that fails to build", function()
  it("adds nothing when kroute.emit raises inside pcall", function()
    local vm = vm_of([[
local kroute = require "kroute"
return function(msg)
  local errs = {}
  local function try(...)
    local ok, err = pcall(kroute.emit, ...)
    assert(not ok, "this emit should have raised")
    errs[#errs + 1] = err
  end
  try("side", {1, 2, print})                    -- value with no JSON form, midway
  try("side", "v", {headers = {a = "1", h = true}})
  try("side", "v", {key = print})
  try("side", "v", {partition = -1})
  try("", "v")
  kroute.log.info(table.concat(errs, "|"))
end
]])
    local res = ok_run(vm, input("x"))
    assert.same({}, res.records)
    vm:close()
  end)

  it("keeps the good emits around a failed one, in order", function()
    local vm = vm_of([[
local kroute = require "kroute"
return function(msg)
  kroute.emit("side", "first")
  pcall(kroute.emit, "side", {ok = true, bad = print})
  kroute.emit("side", "second")
  return "returned"
end
]])
    local res = ok_run(vm, input("x"))
    local got = {}
    for i, r in ipairs(res.records) do got[i] = r.topic .. "=" .. r.value end
    assert.same({"side=first", "side=second", "out=returned"}, got)
    vm:close()
  end)

  it("leaves no pending request when kroute.request raises inside pcall", function()
    local vm = vm_of([[
local kroute = require "kroute"
return function(msg)
  local ok, err = pcall(kroute.request, "svc", {f = print})
  assert(not ok and err:match("no JSON form"), err)
  return (kroute.request("svc", "ping"))
end
]])
    local res = ok_run(vm, input("x"), {replies = {svc = "pong"}})
    assert.equal(1, #res.requests)
    assert.equal("ping", res.requests[1].value)
    assert.equal("pong", res.records[1].value)
    vm:close()
  end)

  it("kroute.record checks header values when it is called", function()
    local vm = vm_of([[
local kroute = require "kroute"
return function(msg)
  local ok, err = pcall(kroute.record, {value = "v", headers = {h = {"a", true}}})
  return kroute.json.encode{ok = ok, err = err}
end
]])
    local v = json.decode(ok_run(vm, input("x")).records[1].value)
    assert.is_false(v.ok)
    assert.matches("header 'h' must be a string or a list of strings, not boolean "
                   .. "%(kroute.null stands for a null value%)", v.err)
    vm:close()
  end)
end)

describe("the C memory of a run's outputs", function()
  it("counts against the route's memory cap", function()
    local vm = vm_of([[
local kroute = require "kroute"
local chunk = string.rep("x", 64 * 1024)
return function(msg)
  for i = 1, tonumber(msg.value) do kroute.emit("side", chunk) end
end
]], {memory = 4 * MiB})
    -- 200 x 64 KiB = 12.5 MiB of copies held outside the Lua heap: over the cap
    local res = vm:handle(input("200"))
    assert.is_false(res.ok)
    assert.matches("out of memory: the records of this run would pass the route's memory "
                   .. "limit %(4194304 bytes%)", res.error)
    assert.same({}, res.records)
    -- the VM stays usable, and a run under the cap is unaffected
    res = ok_run(vm, input("20"))
    assert.equal(20, #res.records)
    vm:close()
  end)

  it("does not count a pass-through of the input's bytes", function()
    local vm = vm_of([[
local kroute = require "kroute"
return function(msg)
  for i = 1, 50 do kroute.emit("side", msg) end
  return msg.value
end
]], {memory = 4 * MiB})
    local res = ok_run(vm, input(string.rep("v", 512 * 1024)))
    assert.equal(51, #res.records)
    vm:close()
  end)
end)

describe("tombstones", function()
  local vm
  setup(function()
    vm = vm_of([[
local kroute = require "kroute"
return function(msg)
  local how = msg.headers.how
  if how == "msg" then return msg end
  if how == "value" then return msg.value end
  if how == "record" then return kroute.record{topic = "t2", value = msg} end
  if how == "null" then
    kroute.emit("t3", kroute.null)
    return kroute.record{value = kroute.json.null, key = "k2"}
  end
  if how == "same" then return kroute.json.encode(kroute.null == kroute.json.null) end
end
]])
  end)
  teardown(function() vm:close() end)

  local function run(value, how)
    return ok_run(vm, input(value, {headers = {{"how", how}, {"trace", "t-1"}}}))
  end

  it("`return msg` forwards a tombstone as a tombstone, with key and headers", function()
    local res = run(nil, "msg")
    assert.equal(1, #res.records)
    local r = res.records[1]
    assert.equal("out", r.topic)
    assert.is_nil(r.value)
    assert.equal("k1", r.key)
    assert.same({{"how", "msg"}, {"trace", "t-1"}}, r.headers)
  end)

  it("`return msg` forwards any other record unchanged, an empty value stays empty", function()
    assert.equal("payload\0bytes", run("payload\0bytes", "msg").records[1].value)
    assert.equal("", run("", "msg").records[1].value)
  end)

  it("`return msg.value` of a tombstone is nil: the message is filtered out", function()
    assert.same({}, run(nil, "value").records)
  end)

  it("a message used as a record value gives its value, null stays null", function()
    local r = run(nil, "record").records[1]
    assert.equal("t2", r.topic)
    assert.is_nil(r.value)
    assert.equal("v", run("v", "record").records[1].value)
  end)

  it("kroute.null (the same value as kroute.json.null) makes a null value", function()
    local res = run("v", "null")
    assert.equal(2, #res.records)
    assert.equal("t3", res.records[1].topic)
    assert.is_nil(res.records[1].value)
    assert.equal("out", res.records[2].topic)
    assert.is_nil(res.records[2].value)
    assert.equal("k2", res.records[2].key)
    assert.equal("true", run("v", "same").records[1].value)
  end)
end)

describe("null header values", function()
  local vm
  setup(function()
    vm = vm_of([[
local kroute = require "kroute"
return function(msg)
  local h = msg.headers
  if msg.value == "look" then
    return kroute.json.encode{
      n_is_null = h.n == kroute.null, e = h.e,
      r = h.r and {h.r[1], h.r[2] == kroute.null and "<null>" or h.r[2]},
    }
  elseif msg.value == "copy" then
    return kroute.record{value = "c", headers = msg.headers}
  elseif msg.value == "set" then
    return kroute.record{value = "s", headers = {n = kroute.null, e = "", l = {"x", kroute.null}}}
  end
  return msg
end
]])
  end)
  teardown(function() vm:close() end)

  local headers = {{"n"}, {"e", ""}, {"r", "a"}, {"r", nil}}

  it("read as kroute.null in msg.headers, apart from empty ones", function()
    local v = json.decode(ok_run(vm, input("look", {headers = headers})).records[1].value)
    assert.is_true(v.n_is_null)
    assert.equal("", v.e)
    assert.same({"a", "<null>"}, v.r)
  end)

  it("stay null when msg.headers is passed on or the message is forwarded", function()
    local null = json.null
    local r = ok_run(vm, input("copy", {headers = headers})).records[1]
    assert.same({{"e", ""}, {"n", null}, {"r", "a"}, {"r", null}}, r.headers)
    r = ok_run(vm, input("fwd", {headers = headers})).records[1]
    assert.same({{"n", null}, {"e", ""}, {"r", "a"}, {"r", null}}, r.headers)
  end)

  it("kroute.null as an output header value makes a null header value", function()
    local r = ok_run(vm, input("set")).records[1]
    assert.same({{"e", ""}, {"l", "x"}, {"l", json.null}, {"n", json.null}}, r.headers)
  end)
end)

-- Hostile and careless handlers against the real sandbox (core/runtime/vm.c): error
-- objects whose __tostring fails or never ends, timeouts swallowed by pcall
-- after a child coroutine timed out, __close and __gc handler code, memory
-- held at the cap, kroute's own run coroutines, FIFOs as modules, and C
-- library calls whose running time a count hook cannot see. Everything
-- that could abort or hang the process runs in a child process.
local native = require "kroute.native"
local scratch = require "support.scratch"

local MiB = 1024 * 1024

local dir
local function handler(name, text)
  return scratch.write(dir, name, text)
end

local function vm_for(path, opts)
  opts = opts or {}
  return assert(native.vm{handler = path, name = "hostile", to = "out", lua_dir = "lua",
                          timeout_ms = opts.timeout_ms or 100, memory = opts.memory})
end

-- Runs `script` in a child Lua process with the same native module; returns
-- its output and exit code (124: still running after `seconds`).
local subprocess = scratch.child

-- One run of `path` in a child process: prints ok, error and the seconds it took.
local function run_in_child(path, opts, seconds)
  opts = opts or {}
  return subprocess(([[
    local native = require "kroute.native"
    local vm = assert(native.vm{handler = %q, name = "hostile", to = "o", lua_dir = "lua",
                                timeout_ms = %d, memory = %d})
    local t0 = os.time()
    local c0 = os.clock()
    local res = vm:handle{topic = "in", value = %q}
    print("RESULT", res.ok, res.error)
    print("VALUE", res.records[1] and res.records[1].value)
    print("SECONDS", os.clock() - c0)
    print("MEMORY", vm:memory())
    local again = vm:handle{topic = "in", value = "ok"}
    print("AGAIN", again.ok, again.error)
  ]]):format(path, opts.timeout_ms or 100, opts.memory or 16 * MiB, opts.value or "x"),
    seconds or 10)
end

local function seconds_of(out)
  return tonumber(out:match("SECONDS\t([%d%.e%-]+)"))
end

describe("hostile handlers", function()
  setup(function() dir = scratch.dir("hostile") end)
  teardown(function() scratch.remove(dir) end)

  describe("error objects", function()
    it("a __tostring that fails gives a clear error instead of aborting", function()
      local path = handler("tostring_fails.lua", [[
        local E = {}
        E.__tostring = function(e) return "ValidationError: " .. e.msg end
        return function(msg)
          if msg.value == "ok" then return "fine" end
          error(setmetatable({field = "amount"}, E))
        end]])
      local out, code = run_in_child(path)
      assert.equal(0, code, out)
      assert.matches("RESULT\tfalse\terror object is a table whose __tostring failed", out)
      assert.matches("AGAIN\ttrue", out)
    end)

    it("a __tostring that never ends is stopped by the deadline", function()
      local path = handler("tostring_loops.lua", [[
        return function(msg)
          if msg.value == "ok" then return "fine" end
          error(setmetatable({}, {__tostring = function() while true do end end}))
        end]])
      local out, code = run_in_child(path, nil, 10)
      assert.are_not.equal(124, code, "the run was still going after 10 s:\n" .. out)
      assert.equal(0, code, out)
      assert.matches("RESULT\tfalse\terror object is a table whose __tostring failed %(timeout%)",
                     out)
      assert.matches("AGAIN\ttrue", out)
    end)

    it("a __tostring that works is used", function()
      local vm = vm_for(handler("tostring_ok.lua", [[
        return function() error(setmetatable({}, {__tostring = function() return "E!" end})) end]]))
      local res = vm:handle{topic = "in", value = "x"}
      assert.is_false(res.ok)
      assert.equal("E!", res.error)
      vm:close()
    end)
  end)

  describe("timeouts", function()
    it("a parent that swallows timeouts after a child coroutine timed out is stopped", function()
      local path = handler("swallow.lua", [[
        return function(msg)
          if msg.value == "ok" then return "fine" end
          local co = coroutine.create(function() while true do end end)
          pcall(coroutine.resume, co) -- the child times out first
          local n = 0
          while true do
            pcall(function() for i = 1, 5000 do n = n + 1 end end)
          end
        end]])
      local out, code = run_in_child(path, {timeout_ms = 100}, 10)
      assert.are_not.equal(124, code, "the run was still going after 10 s:\n" .. out)
      assert.equal(0, code, out)
      assert.matches("RESULT\tfalse\t[^\n]*timeout", out)
      assert.is_true(seconds_of(out) < 2, out)
      assert.matches("AGAIN\ttrue", out)
    end)

    it("the trim idiom on 200 KB of spaces stops at the deadline", function()
      local path = handler("trim.lua", [[
        return function(msg)
          if msg.value == "ok" then return "fine" end
          -- backtracks over every space for every start: quadratic
          local s = "a" .. (" "):rep(200000) .. "b"
          return (s:match("^%s*(.-)%s*$"))
        end]])
      local out, code = run_in_child(path, {timeout_ms = 100}, 20)
      assert.are_not.equal(124, code, "the match was still going after 20 s:\n" .. out)
      assert.equal(0, code, out)
      assert.matches("RESULT\tfalse\t[^\n]*timeout", out)
      assert.is_true(seconds_of(out) < 3, out)
    end)

    for _, case in ipairs({
      {"string.rep of an empty string 1e15 times", [[return #string.rep("", 1e15)]]},
      {"string.rep with an empty separator", [[return #string.rep("", 1e15, "")]]},
      {"table.move over 1e15 slots", [[table.move({}, 1, 1e15, 2) return "moved"]]},
    }) do
      it(case[1] .. " ends at once or at the deadline", function()
        local path = handler("long_c_" .. _ .. ".lua",
                             "return function(msg) if msg.value == 'ok' then return 'fine' end "
                             .. case[2] .. " end")
        local out, code = run_in_child(path, {timeout_ms = 100}, 20)
        assert.are_not.equal(124, code, "still going after 20 s:\n" .. out)
        assert.equal(0, code, out)
        assert.is_true(seconds_of(out) < 3, out)
        assert.matches("AGAIN\ttrue", out)
      end)
    end
  end)

  describe("__close and __gc", function()
    it("a __close handler that never ends is stopped by the deadline", function()
      local path = handler("close_loops.lua", [[
        return function(msg)
          if msg.value == "ok" then return "fine" end
          local x <close> = setmetatable({}, {__close = function() while true do end end})
          error("boom")
        end]])
      local out, code = run_in_child(path, {timeout_ms = 100}, 10)
      assert.are_not.equal(124, code, "still going after 10 s:\n" .. out)
      assert.equal(0, code, out)
      assert.matches("RESULT\tfalse\t[^\n]*boom", out)
      assert.matches("AGAIN\ttrue", out)
    end)

    it("a __close handler cannot grow the state past the cap", function()
      local cap = 16 * MiB
      local path = handler("close_grows.lua", [[
        keep = {}
        return function(msg)
          if msg.value == "ok" then return "fine" end
          local x <close> = setmetatable({}, {__close = function()
            for i = 1, 1e8 do keep[i] = ("x"):rep(64) .. i end
          end})
          error("boom")
        end]])
      local out, code = run_in_child(path, {timeout_ms = 2000, memory = cap}, 20)
      assert.equal(0, code, out)
      assert.matches("RESULT\tfalse\t[^\n]*boom", out)
      local mem = tonumber(out:match("MEMORY\t(%d+)"))
      assert.is_true(mem <= cap, "the state holds " .. tostring(mem) .. " bytes")
      assert.matches("AGAIN\ttrue", out)
    end)

    it("refuses __gc metamethods: a finalizer would run outside every limit", function()
      local vm = vm_for(handler("gc.lua", [[
        return function()
          setmetatable({}, {__gc = function() while true do end end})
          return "set"
        end]]))
      local res = vm:handle{topic = "in", value = "x"}
      assert.is_false(res.ok)
      assert.matches("__gc metamethods are not allowed in handlers", res.error)
      vm:close()
    end)

    it("kroute's own metatables are locked", function()
      local vm = vm_for(handler("mt.lua", [[
        local kroute = require "kroute"
        return function(msg)
          return tostring(getmetatable(msg)) .. " " .. tostring(getmetatable(kroute.record{value = "v"}))
            .. " " .. tostring(getmetatable(kroute.json.decode("[]")))
        end]]))
      local res = vm:handle{topic = "in", value = "x"}
      assert(res.ok, res.error)
      assert.equal("kroute kroute kroute", res.records[1].value)
      vm:close()
    end)

    it("setmetatable keeps working for ordinary metatables", function()
      local vm = vm_for(handler("mt_ok.lua", [[
        return function(msg)
          local t = setmetatable({}, {__index = function(_, k) return k .. "!" end})
          local locked = setmetatable({}, {__metatable = "no"})
          local ok = pcall(setmetatable, locked, {})
          return t.hi .. " " .. tostring(ok)
        end]]))
      local res = vm:handle{topic = "in", value = "x"}
      assert(res.ok, res.error)
      assert.equal("hi! false", res.records[1].value)
      vm:close()
    end)
  end)

  describe("memory", function()
    it("a state left at its cap is rebuilt, so later runs succeed", function()
      local vm = vm_for(handler("hoard.lua", [[
        local hoard = {}
        return function(msg)
          if msg.value == "count" then return tostring(#hoard) end
          for i = 1, 20000 do hoard[#hoard + 1] = {i} end -- small pieces: fills it to the brim
          return "kept"
        end]]), {memory = 4 * MiB})
      local failed
      for _ = 1, 64 do
        local res = vm:handle{topic = "in", value = "more"}
        if not res.ok then failed = res.error break end
      end
      assert.matches("out of memory", failed)
      local res = vm:handle{topic = "in", value = "count"}
      assert(res.ok, res.error)
      assert.equal("0", res.records[1].value) -- a fresh state: the hoard is gone
      assert.is_true(vm:memory() < 4 * MiB)
      vm:close()
    end)
  end)

  describe("run coroutines", function()
    it("a handler cannot resume or close kroute's run coroutine", function()
      local vm = vm_for(handler("hijack.lua", [[
        local kept
        return function(msg)
          if msg.value == "keep" then kept = coroutine.running() return "kept" end
          local ok1, e1 = pcall(coroutine.resume, kept, "forged")
          local ok2, e2 = pcall(coroutine.close, kept)
          local ok3 = coroutine.resume(coroutine.create(function() end))
          return table.concat({tostring(ok1), e1, tostring(ok2), e2, tostring(ok3)}, "|")
        end]]))
      assert(vm:handle{topic = "in", value = "keep"}.ok)
      local res = vm:handle{topic = "in", value = "hijack"}
      assert(res.ok, res.error)
      local parts = {}
      for p in (res.records[1].value .. "|"):gmatch("([^|]*)|") do parts[#parts + 1] = p end
      assert.equal("false", parts[1])
      assert.matches("only coroutines the handler created", parts[2])
      assert.equal("false", parts[3])
      assert.matches("only coroutines the handler created", parts[4])
      assert.equal("true", parts[5]) -- its own coroutines still work
      vm:close()
    end)
  end)

  describe("files", function()
    it("a FIFO as a module fails to load instead of blocking", function()
      os.execute("mkfifo '" .. dir .. "/fifo_mod.lua'")
      local path = handler("requires_fifo.lua", [[
        return function(msg)
          if msg.value == "ok" then return "fine" end
          local ok, err = pcall(require, "fifo_mod")
          return tostring(ok) .. " " .. tostring(err)
        end]])
      local out, code = run_in_child(path, nil, 10)
      assert.are_not.equal(124, code, "require blocked on the FIFO:\n" .. out)
      assert.equal(0, code, out)
      assert.matches("VALUE\tfalse [^\n]*fifo_mod.lua: not a regular file", out)
    end)

    it("a FIFO as the handler file fails to load instead of blocking", function()
      os.execute("mkfifo '" .. dir .. "/fifo_handler.lua'")
      local out, code = subprocess(([[
        local native = require "kroute.native"
        local vm, err = native.vm{handler = %q, to = "o", lua_dir = "lua"}
        print("RESULT", vm, err)
      ]]):format(dir .. "/fifo_handler.lua"), 10)
      assert.are_not.equal(124, code, "loading blocked on the FIFO:\n" .. out)
      assert.matches("RESULT\tnil\t[^\n]*not a regular file", out)
    end)
  end)
end)

-- The command line as a user meets it: exit codes, file:line:col errors,
-- `kroute check`, flags of the contract, `kroute broker`, embedded default.
local env = require "support.env"
local ts = env.ts

local dir
setup(function() dir = env.tmpdir() end)
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local function handler(path, body)
  return env.write(dir .. "/" .. path, body or "return function(msg) return msg.value end\n")
end

describe("kroute check", function()
  it("accepts a valid route folder and exits 0", function()
    handler("ok/h.lua")
    env.write(dir .. "/ok/a.yaml", "routes:\n  - { name: a, match: in, handler: h.lua, to: out }\n")
    local code, out = env.run_cmd{"check", dir .. "/ok"}
    assert.equal(0, code, out)
    assert.matches("ok: 1 route", out)
  end)

  it("reports bad YAML as file:line:col and exits 2", function()
    local f = env.write(dir .. "/bad1.yaml", "routes:\n  - name: a\n    match: [in\n    handler: h.lua\n")
    local code, out = env.run_cmd{"check", f}
    assert.equal(2, code)
    assert.matches(f:gsub("%p", "%%%0") .. ":%d+:%d+: ", out)
  end)

  it("reports unknown keys and type errors at their line and column", function()
    handler("h.lua")
    local f = env.write(dir .. "/bad2.yaml", table.concat({
      "routes:",
      "  - name: a",
      "    match: in",
      "    handler: h.lua",
      "    colour: blue",
      "    retry: { attempts: many }",
      "    timeout: soon",
    }, "\n") .. "\n")
    local code, out = env.run_cmd{"check", f}
    assert.equal(2, code)
    local q = f:gsub("%p", "%%%0")
    assert.matches(q .. ":5:5: unknown key 'colour' in route", out)
    assert.matches(q .. ":6:24: retry.attempts must be an integer", out)
    assert.matches(q .. ":7:14: timeout must be a duration", out)
  end)

  it("rejects an unknown librdkafka property by name", function()
    handler("h.lua")
    local f = env.write(dir .. "/bad3.yaml",
      "kafka:\n  consumer: { fetch.wait.max.ms: 10, no.such.property: 1 }\n" ..
      "routes:\n  - { name: a, match: in, handler: h.lua, to: out }\n")
    local code, out = env.run_cmd{"check", f}
    assert.equal(2, code)
    assert.matches(":2:38: unknown librdkafka consumer property 'no.such.property'", out)
  end)

  it("compiles and loads handlers in the sandbox: file:line: message", function()
    handler("syntax.lua", "return function(msg)\n  return msg.value +\nend\n")
    handler("sandbox.lua", "local f = io.open('/etc/passwd')\nreturn function() end\n")
    local f = env.write(dir .. "/bad4.yaml", table.concat({
      "routes:",
      "  - { name: a, match: in, handler: syntax.lua, to: out }",
      "  - { name: b, match: in2, handler: sandbox.lua, to: out }",
      "  - { name: c, match: in3, handler: missing.lua, to: out }",
    }, "\n") .. "\n")
    local code, out = env.run_cmd{"check", f}
    assert.equal(2, code)
    assert.matches(":4:37: handler file '[^']*missing.lua' cannot be read", out)
    -- handler errors come after the YAML is valid: fix the missing one
    handler("missing.lua")
    code, out = env.run_cmd{"check", f}
    assert.equal(2, code)
    assert.matches("syntax%.lua:3: unexpected symbol near 'end'", out)
    assert.matches("sandbox%.lua:1: attempt to index a nil value %(global 'io'%)", out)
  end)
end)

-- A route change is reviewed in CI with `kroute check` (and drawn with
-- `kroute graph`) before it runs: neither may crash, hang, run code or show
-- a file the change points at.
describe("kroute check on an untrusted route change", function()
  local q = function(s) return (s:gsub("%p", "%%%0")) end

  it("refuses a backreference in a /regex/ instead of crashing in glibc", function()
    handler("re/h.lua")
    local f = env.write(dir .. "/re/r.yaml",
      "routes:\n  - { name: a, match: /(a*)(\\1\\1)*/, handler: h.lua, to: payment.done }\n")
    local code, out = env.run_cmd{"check", f}
    assert.equal(2, code, out) -- 139 (SIGSEGV) before
    assert.matches(q(f) .. ":2:23: invalid regex /%(a%*%)%(\\1\\1%)%*/: backreferences like "
                   .. "\\1 are not supported", out)
  end)

  it("never loads a plugin library or runs a kinit command: check, graph, run", function()
    local d = dir .. "/plugin"
    handler("plugin/h.lua")
    -- a library that leaves a mark when it is loaded
    env.write(d .. "/evil.c", ('#include <stdio.h>\n__attribute__((constructor)) static void '
      .. 'mark(void) { fclose(fopen("%s/loaded", "w")); }\n'):format(d))
    assert(os.execute(("cc -shared -fPIC -o '%s/evil.so' '%s/evil.c'"):format(d, d)))
    local f = env.write(d .. "/r.yaml", table.concat({
      "kafka:",
      "  consumer: { plugin.library.paths: " .. d .. "/evil.so }",
      "  producer: { sasl.kerberos.kinit.cmd: touch " .. d .. "/kinit-ran }",
      "routes:",
      "  - { name: a, match: in, handler: h.lua, to: out }",
    }, "\n") .. "\n")
    for _, cmd in ipairs{"check", "graph", "run"} do
      local code, out = env.run_cmd{cmd, f}
      assert.equal(2, code, out)
      assert.matches(q(f) .. ":2:15: kafka.consumer: librdkafka property 'plugin.library.paths' "
                     .. "loads or runs code and is not allowed in route files", out)
      assert.matches(q(f) .. ":3:15: kafka.producer: librdkafka property "
                     .. "'sasl.kerberos.kinit.cmd' loads or runs code", out)
      assert.is_nil(io.open(d .. "/loaded"), cmd .. " loaded the plugin")
      assert.is_nil(io.open(d .. "/kinit-ran"), cmd .. " ran the kinit command")
    end
  end)

  it("refuses a FIFO as a route file or a handler instead of waiting for a writer", function()
    local d = dir .. "/fifo"
    handler("fifo/h.lua")
    assert(os.execute(("mkfifo '%s/a.yaml' '%s/f.lua'"):format(d, d)))
    local code, out = env.run_cmd({"check", d}, 10000) -- blocked forever before
    assert.equal(2, code, out)
    assert.matches(q(d) .. "/a%.yaml:1:1: not a regular file", out)
    os.remove(d .. "/a.yaml")
    local f = env.write(d .. "/b.yaml", "routes:\n  - { name: a, match: in, handler: f.lua }\n")
    code, out = env.run_cmd({"check", d}, 10000)
    assert.equal(2, code, out)
    assert.matches(q(f) .. ":2:36: handler file '" .. q(d) .. "/f%.lua' is not a regular file",
                   out)
  end)

  it("keeps handlers in the route file's folder and never shows another file", function()
    env.write(dir .. "/secret.txt", "hunter2 hunter3\n")
    local f = env.write(dir .. "/peek/r.yaml",
      "routes:\n  - { name: a, match: in, handler: ../secret.txt }\n")
    local code, out = env.run_cmd{"check", f}
    assert.equal(2, code, out)
    assert.matches(q(f) .. ":2:36: handler file '[^']*/peek/%.%./secret%.txt' is outside "
                   .. "[^,]*/peek, the folder handlers must be in", out)
    assert.is_nil(out:find("hunter", 1, true), out) -- the Lua parser quoted it before
  end)

  it("shows the ${VAR}, not the secret it holds, in an error", function()
    handler("h.lua")
    local f = env.write(dir .. "/secret.yaml", "routes:\n  - { name: a, match: in, "
                        .. "handler: h.lua, to: out, memory: \"${HOME}\" }\n")
    local code, out = env.run_cmd{"check", f}
    assert.equal(2, code, out)
    assert.matches("got '%${HOME}'", out)
    assert.is_nil(out:find(os.getenv("HOME") .. "'", 1, true))
  end)
end)

describe("kroute run", function()
  it("exits 2 with file:line:col on a bad route file, before touching Kafka", function()
    local f = env.write(dir .. "/bad5.yaml", "routes:\n  - name: a\n    match: in\n    handler: nope.lua\n    to: out\n")
    local code, out = env.run_cmd{"run", "--brokers", "127.0.0.1:1", f}
    assert.equal(2, code)
    assert.matches(":4:14: handler file", out)
  end)

  it("exits 2 on an unknown flag and accepts every flag of the contract", function()
    local code, out = env.run_cmd{"run", "--frobnicate"}
    assert.equal(2, code)
    code, out = env.run_cmd{"run", "--max-inflight", "1k"}
    assert.equal(2, code)
    assert.matches("%-%-max%-inflight takes a size of at least 64KiB", out)
    handler("flags/h.lua")
    env.write(dir .. "/flags/r.yaml", env.fast_kafka ..
      "routes:\n  - { name: a, match: flags.in, handler: h.lua, to: flags.out }\n" ..
      "  - { name: b, match: flags.in2, handler: h.lua, to: flags.out, group: flag-b }\n")
    local broker = env.broker{"flags.in:1", "flags.in2:1", "flags.out:1"}
    local r = env.kroute(dir .. "/flags", broker.addr, {args = {
      "--brokers", broker.addr, "--group", "flag-group", "--workers", "2",
      "--admin", "127.0.0.1:0", "--no-watch", "--max-inflight", "8MiB",
      "--drain-timeout", "10s"}, log_level = "debug"})
    assert.is_truthy(r:wait_assigned(30000), r:logtext())
    assert.matches("group=flag%-group", r:logtext())
    -- the budget sizes librdkafka's prefetch, shared by the queues of the
    -- two groups' two worker threads each: 8 MiB / 4
    assert.matches("group=flag%-group prefetches up to 2048 KiB", r:logtext())
    assert.matches("group=flag%-b prefetches up to 2048 KiB", r:logtext())
    ts.produce(broker.addr, "flags.in", {{key = "k", value = "v"}})
    local out = env.consume(broker.addr, "flags.out", 1, 15000)
    assert.equal(1, #out)
    r:stop_clean()
    r:cleanup()
    broker.stop()
  end)

  it("starts an embedded broker by default and prints its address", function()
    handler("emb/h.lua", "return function(msg) return 'seen ' .. msg.value end\n")
    env.write(dir .. "/emb/r.yaml",
      "kafka: { consumer: { fetch.wait.max.ms: 10 } }\n" ..
      "routes:\n  - { name: a, match: emb.in, handler: h.lua, to: emb.out }\n")
    local r = env.kroute(dir .. "/emb", nil)
    local addr = r:wait_log("embedded broker listening on (127%.0%.0%.1:%d+)", 10000)
    assert.is_truthy(addr, r:logtext())
    assert.is_truthy(r:wait_assigned(30000))
    ts.produce(addr, "emb.in", {{key = "k", value = "hello"}})
    local out = env.consume(addr, "emb.out", 1, 15000)
    assert.equal("seen hello", out[1] and out[1].value)
    r:stop_clean()
    r:cleanup()
  end)
end)

describe("kroute broker", function()
  it("serves other clients on a fixed --port with pre-created topics", function()
    local d = env.tmpdir()
    local pid, port, addr, exited
    -- a port picked at random may be taken by another program: then kroute
    -- says so and exits 1, and another port is tried
    for attempt = 1, 5 do
      port = 20000 + (ts.now() + attempt * 7919) % 20000
      pid = ts.spawn({env.bin, "broker", "--port", tostring(port), "wide:12"},
                     {stdout = d .. "/addr", stderr = d .. "/log"})
      addr = env.wait_for(function()
        exited = ts.wait(pid, 0)
        return exited or env.read(d .. "/addr"):match("^(%S+)\n")
      end, 30000)
      if exited ~= "exit" or not env.read(d .. "/log"):match("cannot listen") then break end
    end
    assert.equal("127.0.0.1:" .. port, addr, env.read(d .. "/log"))
    local hw = ts.high_watermarks(addr, "wide")
    local n = 0
    for _ in pairs(hw) do n = n + 1 end
    assert.equal(12, n)
    ts.produce(addr, "wide", {{key = "a", value = "1"}, {key = "b", value = "2"}})
    assert.equal(2, #env.consume(addr, "wide", 2, 10000))
    ts.kill(pid, "TERM")
    assert.same({"exit", 0}, {ts.wait(pid, 10000)})
    os.execute("rm -rf '" .. d .. "'")
  end)

  it("rejects a malformed topic spec with exit 2", function()
    local code, out = env.run_cmd{"broker", "nocolon"}
    assert.equal(2, code)
    assert.matches("not TOPIC:PARTITIONS", out)
  end)
end)

describe("make install", function()
  it("installs the binary, the Lua library, the native module and the examples under PREFIX", function()
    local prefix = env.tmpdir()
    local ok = os.execute("make -s install PREFIX='" .. prefix .. "' >/dev/null 2>&1")
    assert.is_true(ok)
    for _, f in ipairs{"/bin/kroute", "/share/kroute/lua/kroute/testing.lua",
                       "/lib/kroute/lua/kroute/native.so"} do
      assert.is_truthy(ts.read_file(prefix .. f), f .. " not installed")
    end
    for _, f in ipairs{"/share/man/man1/kroute.1", "/share/bash-completion/completions/kroute"} do
      assert.is_truthy(ts.read_file(prefix .. f), f .. " not installed")
    end
    local pid = ts.spawn({prefix .. "/bin/kroute", "check", "examples/welcome/routes.yaml"},
                         {stdout = prefix .. "/out", stderr = prefix .. "/out"})
    assert.same({"exit", 0}, {ts.wait(pid, 10000)})
    assert.matches("ok: 1 route", env.read(prefix .. "/out"))
    -- the installed kroute finds its Lua library and native module for specs
    pid = ts.spawn({prefix .. "/bin/kroute", "test", "examples/welcome/routes.yaml"},
                   {stdout = prefix .. "/test", stderr = prefix .. "/test"})
    assert.same({"exit", 0}, {ts.wait(pid, 30000)}, env.read(prefix .. "/test"))
    assert.matches("%d+ successes / 0 failures / 0 errors", env.read(prefix .. "/test"))
    -- the shipped routes/ and examples, side by side as in the repository
    pid = ts.spawn({prefix .. "/bin/kroute", "check", prefix .. "/share/kroute/routes"},
                   {stdout = prefix .. "/shop", stderr = prefix .. "/shop"})
    assert.same({"exit", 0}, {ts.wait(pid, 10000)}, env.read(prefix .. "/shop"))
    assert.matches("ok: 3 route", env.read(prefix .. "/shop"))
    ok = os.execute("make -s uninstall PREFIX='" .. prefix .. "' >/dev/null 2>&1")
    assert.is_true(ok)
    assert.is_nil(ts.read_file(prefix .. "/bin/kroute"))
    assert.is_nil(ts.read_file(prefix .. "/share/kroute/routes/shop.yaml"))
    assert.is_nil(ts.read_file(prefix .. "/lib/kroute/lua/kroute/native.so"))
    os.execute("rm -rf '" .. prefix .. "'")
  end)
end)

describe("kroute graph", function()
  it("prints the topology as Mermaid, or as dot with --format dot", function()
    local dir = env.tmpdir()
    env.write(dir .. "/h.lua", "return function(msg) return msg.value end")
    env.write(dir .. "/r.yaml", [[
routes:
  - name: orders
    match:
      - order.created
      - /^order\.v[0-9]+$/
    handler: h.lua
    to: order.enriched
    emits: [audit.log]
    requests: [user.get]
    dlq: order.failed
  - name: math
    match: sum
    handler: h.lua
    reply: nest
    dlq: false
]])
    local code, out = env.run_cmd{"graph", dir}
    assert.equal(0, code, out)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[line] = true end
    assert.is_true(lines["flowchart LR"])
    assert.is_true(lines['  r1("orders<br/>h.lua<br/>group kroute")'], out)
    assert.is_true(lines['  t1[("order.created")]'], out)
    assert.is_true(lines["  t1 --> r1"], out)
    assert.is_true(lines['  t2[("/^order\\.v[0-9]+$/")]'], out)
    assert.is_true(lines["  t2 --> r1"], out)
    assert.is_true(lines['  t3[("order.enriched")]'] and lines["  r1 --> t3"], out)
    assert.is_true(lines['  t4[("audit.log")]'] and lines["  r1 -->|emit| t4"], out)
    assert.is_true(lines['  t5[("user.get")]'] and lines["  r1 -.->|request| t5"], out)
    assert.is_true(lines['  t6[("user.get.reply")]'] and lines["  t6 -.->|reply| r1"], out)
    assert.is_true(lines['  t7[("order.failed")]'] and lines["  r1 -.->|DLQ| t7"], out)
    assert.is_true(lines["  r2 -.->|reply| t9"], out) -- the caller's reply topic
    assert.is_nil(out:match("r2 %-%.%->|DLQ|")) -- dlq: false
    code, out = env.run_cmd{"graph", "--format", "dot", dir}
    assert.equal(0, code, out)
    assert.matches("^digraph kroute {\n  rankdir=LR;\n", out)
    assert.matches('\n  t1 %[shape=cylinder, label="order.created"%];\n', out)
    assert.matches("\n  r1 %-> t3;\n", out)
    assert.matches('\n  r1 %-> t7 %[label="DLQ", style=dashed%];\n', out)
    assert.matches("}\n$", out)
    code, out = env.run_cmd{"graph", "--format", "svg", dir}
    assert.equal(2, code)
    assert.matches("mermaid or dot", out)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("kroute test", function()
  it("runs the handler specs beside route files with kroute.testing available", function()
    -- generous bounds: under ASan on a loaded machine each run takes tens of seconds
    local code, out = env.run_cmd({"test", "examples/payments/routes.yaml"}, 240000)
    assert.equal(0, code, out)
    assert.matches("%d+ successes / 0 failures / 0 errors", out)
    -- a failing spec fails the command
    local dir = env.tmpdir()
    env.write(dir .. "/h.lua", "return function(msg) return msg.value .. '!' end")
    env.write(dir .. "/r.yaml", "routes:\n  - name: x\n    match: x\n    handler: h.lua\n    to: y\n")
    env.write(dir .. "/h_spec.lua", [[
local testing = require "kroute.testing"
describe("h", function()
  it("adds a bang", function()
    local h = testing.handler("]] .. dir .. [[/h.lua", {to = "y"})
    local res = h:run(testing.message{value = "hi"})
    assert.equal("hi?", res.records[1].value)
  end)
end)
]])
    code, out = env.run_cmd({"test", dir}, 240000)
    assert.is_true(code ~= 0, out)
    assert.matches("0 successes / 1 failure", out)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("the manual page", function()
  it("covers every command and option kroute help lists", function()
    local _, help = env.run_cmd{"help"}
    local man = env.read("core/kroute.1"):gsub("\\%-", "-"):gsub("\\f[BIRP]", "")
    for word in help:gmatch("%-%-[%w%-]+") do
      assert.is_truthy(man:find(word, 1, true), word .. " is not in kroute.1")
    end
    for cmd in help:gmatch("\n  kroute (%w+)") do
      assert.is_truthy(man:find("kroute " .. cmd, 1, true) or man:find(".B " .. cmd, 1, true),
                       cmd .. " is not in kroute.1")
    end
  end)
end)

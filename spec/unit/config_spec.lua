-- Route files (core/config/config.c) through the real loader: what `kroute run`
-- and `kroute check` accept, the values they resolve, and the exact
-- "file:line:col: message" of every kind of mistake.
local native = require "kroute.native"

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/unit"
local F = HERE .. "/fixtures/config"
local BAD = F .. "/bad"

local function load_ok(...)
  local cfg, errs = native.load_config(...)
  assert(cfg, "expected the config to load, got:\n" .. table.concat(errs or {}, "\n"))
  return cfg
end

local function load_bad(...)
  local cfg, errs = native.load_config(...)
  assert.is_nil(cfg)
  assert.is_table(errs)
  return errs
end

local function route(cfg, name)
  for _, r in ipairs(cfg.routes) do
    if r.name == name then return r end
  end
  error("no route " .. name)
end

local function names(cfg)
  local out = {}
  for i, r in ipairs(cfg.routes) do out[i] = r.name end
  return out
end

describe("route files that load", function()
  describe("a file using every field", function()
    local cfg, ranking, lists
    setup(function()
      cfg = load_ok(F .. "/full.yaml")
      ranking, lists = route(cfg, "ranking"), route(cfg, "lists")
    end)

    it("reads the kafka section", function()
      assert.equal("localhost:9092,localhost:9093", cfg.brokers)
      assert.equal("shop-router", cfg.group)
    end)

    it("passes librdkafka properties through as strings, flow and block style", function()
      assert.same({["session.timeout.ms"] = "6000", ["auto.offset.reset"] = "earliest"},
                  cfg.consumer)
      assert.same({["linger.ms"] = "5", ["compression.type"] = "lz4"}, cfg.producer)
    end)

    it("keeps routes in file order", function()
      assert.same({"ranking", "lists"}, names(cfg))
    end)

    it("resolves the handler against the route file's folder", function()
      assert.equal(F .. "/handlers/noop.lua", ranking.handler)
      assert.equal(F .. "/handlers/noop.lua", lists.handler)
    end)

    it("reads to, group, ordering and dlq", function()
      assert.equal("ranking.points", ranking.to)
      assert.equal("ranking", ranking.group)
      assert.equal("key", ranking.ordering)
      assert.equal("payment.completed.failed", ranking.dlq)
    end)

    it("parses retry, timeout and memory with their units", function()
      assert.equal(5, ranking.attempts)
      assert.equal(1500, ranking.backoff_ms)       -- 1.5s
      assert.equal(120000, ranking.max_backoff_ms) -- 2m
      assert.equal(200, ranking.timeout_ms)        -- 200ms
      assert.equal(32 * 1024 * 1024, ranking.memory) -- 32MiB
      assert.equal(512 * 1024, ranking.max_input)   -- 512KiB
      -- an eighth of memory by default, but no more than the producer sends:
      -- message.max.bytes (librdkafka's 1000000) less 64 KiB for headers
      assert.equal(1000000 - 65536, lists.max_input)
      assert.equal(60000, lists.timeout_ms)        -- 1m
      assert.equal(1000000000, lists.memory)       -- 1GB (decimal)
    end)

    it("raises max_backoff to backoff when it is smaller", function()
      assert.equal(1, lists.attempts)
      assert.equal(10000, lists.backoff_ms)
      assert.equal(10000, lists.max_backoff_ms)
    end)

    it("turns `dlq: false` into false (log and skip)", function()
      assert.is_false(lists.dlq)
      assert.equal("none", lists.ordering)
    end)

    it("gives routes without their own group the kafka group", function()
      assert.equal("shop-router", lists.group)
    end)

    it("reads a single match as one exact pattern", function()
      assert.same({{text = "payment.completed", kind = "exact",
                    subscription = "payment.completed"}}, ranking.match)
    end)

    it("reads a list match as exact, glob and regex patterns", function()
      assert.same({
        {text = "orders.created", kind = "exact", subscription = "orders.created"},
        {text = "invoice.*", kind = "glob", subscription = "^invoice\\..*$"},
        {text = "^refund\\.(eu|us)$", kind = "regex", subscription = "^refund\\.(eu|us)$"},
      }, lists.match)
    end)

    it("records where each route starts as file:line:col", function()
      assert.equal(F .. "/full.yaml:9:5", ranking.where)
      assert.equal(F .. "/full.yaml:21:5", lists.where)
    end)
  end)

  describe("a minimal file", function()
    local cfg, r
    setup(function()
      cfg = load_ok(F .. "/minimal.yaml")
      r = cfg.routes[1]
    end)

    it("uses the embedded broker and the kroute group", function()
      assert.equal("embedded", cfg.brokers)
      assert.equal("kroute", cfg.group)
      assert.equal("kroute", r.group)
      assert.same({}, cfg.consumer)
      assert.same({}, cfg.producer)
    end)

    it("applies the documented route defaults", function()
      assert.equal(1, #cfg.routes)
      assert.equal("only", r.name)
      assert.equal("partition", r.ordering)
      assert.equal(3, r.attempts)
      assert.equal(200, r.backoff_ms)
      assert.equal(5000, r.max_backoff_ms)
      assert.equal(5000, r.timeout_ms)
      assert.equal(64 * 1024 * 1024, r.memory)
      assert.equal(1000000 - 65536, r.max_input) -- message.max.bytes less 64 KiB
      assert.is_nil(r.dlq) -- "<topic>.dlq"
      assert.is_nil(r.to)
      assert.equal(F .. "/minimal.yaml:2:5", r.where)
    end)
  end)

  describe("${VAR} expansion", function()
    local cfg, r
    setup(function()
      cfg = load_ok(F .. "/env.yaml")
      r = cfg.routes[1]
    end)

    it("uses the default of an unset variable", function()
      assert.equal("embedded", cfg.brokers)
      assert.equal("orders.new", r.match[1].text)
    end)

    it("allows an empty default inside surrounding text", function()
      assert.equal("g-x", cfg.group)
    end)

    it("substitutes set variables", function()
      assert.truthy(os.getenv("HOME") and os.getenv("PATH"))
      assert.equal("home" .. os.getenv("HOME") .. ":" .. os.getenv("PATH"), r.group)
    end)
  end)

  describe("a folder", function()
    local cfg
    setup(function() cfg = load_ok(F .. "/folder") end)

    it("loads every route file in name order (a-, b-, c-), skipping hidden and other files",
       function()
      assert.same({"payments", "payments2", "orders", "refunds"}, names(cfg))
      assert.equal(F .. "/folder/a-payments.yaml:2:5", route(cfg, "payments").where)
      assert.equal(F .. "/folder/b-orders.yaml:6:5", route(cfg, "orders").where)
      assert.equal(F .. "/folder/c-refunds.yml:2:5", route(cfg, "refunds").where)
    end)

    it("takes kafka settings from whichever file sets them, for all routes", function()
      assert.equal("folder-group", cfg.group)
      assert.equal("folder-group", route(cfg, "payments").group)
      assert.same({["fetch.min.bytes"] = "10"}, cfg.consumer)
    end)

    it("resolves handlers against each file's folder", function()
      assert.equal(F .. "/folder/../handlers/noop.lua", route(cfg, "orders").handler)
    end)
  end)

  it("caps the default max_input by kafka.producer's message.max.bytes, from any file",
     function()
    local dir = io.popen("mktemp -d /tmp/kroute-config.XXXXXX"):read("l")
    local function write(name, text)
      local f = assert(io.open(dir .. "/" .. name, "w"))
      f:write(text)
      f:close()
    end
    write("h.lua", "return function(msg) return msg.value end\n")
    write("a-routes.yaml", [[
routes:
  - { name: big, match: big.in, handler: h.lua, memory: 1GB }
  - { name: small, match: small.in, handler: h.lua, memory: 8MiB }
  - { name: explicit, match: e.in, handler: h.lua, max_input: 2MiB }
]])
    -- read after the routes: the default is settled once every file is in
    write("b-kafka.yaml", "kafka:\n  producer: { message.max.bytes: 3000000 }\n")
    local cfg = load_ok(dir)
    os.execute("rm -rf '" .. dir .. "'")
    assert.equal(3000000 - 65536, route(cfg, "big").max_input)
    assert.equal(1024 * 1024, route(cfg, "small").max_input) -- an eighth of memory
    assert.equal(2 * 1024 * 1024, route(cfg, "explicit").max_input)
  end)

  it("loads several paths given together", function()
    local cfg = load_ok(F .. "/full.yaml", F .. "/minimal.yaml")
    assert.same({"ranking", "lists", "only"}, names(cfg))
    assert.equal("shop-router", route(cfg, "only").group)
  end)

  it("loads the same file twice in a row identically (no state leaks between loads)",
     function()
    assert.same(load_ok(F .. "/full.yaml"), load_ok(F .. "/full.yaml"))
  end)
end)

describe("route files that are rejected", function()
  it("reports an unknown route key at the key", function()
    local f = BAD .. "/unknown_route_key.yaml"
    assert.same({f .. ":5:5: unknown key 'priority' in route (expected one of: name, match, "
                 .. "handler, to, group, ordering, retry, dlq, timeout, memory, max_input, emits, "
                 .. "requests, reply)"},
                load_bad(f))
  end)

  it("reports unknown keys in kafka, retry and at the top level, all in one pass", function()
    local f = BAD .. "/unknown_keys.yaml"
    assert.same({
      f .. ":3:3: unknown key 'clientid' in kafka (expected one of: brokers, group, "
        .. "consumer, producer)",
      f .. ":8:27: unknown key 'jitter' in retry (expected one of: attempts, backoff, "
        .. "max_backoff)",
      f .. ":9:1: unknown key 'version' in the route file (expected one of: kafka, routes, "
        .. "handler_root)",
    }, load_bad(f))
  end)

  it("reports values of the wrong type at the value", function()
    local f = BAD .. "/type_errors.yaml"
    local errs = load_bad(f)
    local set = {}
    for _, e in ipairs(errs) do set[e] = true end
    assert.is_true(set[f .. ":2:11: name must be a string, not a list"], table.concat(errs, "\n"))
    assert.is_true(set[f .. ":5:12: retry must be a mapping, not a scalar"])
    assert.is_true(set[f .. ":7:12: match must be a string, not a mapping"])
    assert.is_true(set[f .. ":9:9: to must be a string, not a list"])
  end)

  it("rejects routes that are not a list", function()
    local f = BAD .. "/routes_not_list.yaml"
    assert.same({f .. ":2:3: routes must be a list, not a mapping"}, load_bad(f))
  end)

  it("rejects a file whose top level is not a mapping", function()
    local f = BAD .. "/root_list.yaml"
    assert.same({f .. ":1:1: the route file must be a mapping, not a list"}, load_bad(f))
  end)

  it("rejects an empty file", function()
    local f = BAD .. "/empty.yaml"
    assert.same({f .. ":1:1: empty route file"}, load_bad(f))
  end)

  it("rejects non-string keys", function()
    local f = BAD .. "/keys_not_strings.yaml"
    assert.same({f .. ":5:7: keys must be strings"}, load_bad(f))
  end)

  it("reports bad durations and a zero timeout", function()
    local f = BAD .. "/durations.yaml"
    assert.same({
      f .. ":5:14: timeout must be a duration like 200ms, 5s or 1m, got '5 parsecs'",
      f .. ":7:16: retry.backoff must be a duration like 200ms, 5s or 1m, got '-1s'",
      f .. ":8:20: retry.max_backoff must be a duration like 200ms, 5s or 1m, got 'soon'",
      f .. ":12:14: timeout must be greater than 0",
    }, load_bad(f))
  end)

  it("reports bad sizes and sizes under 1MiB", function()
    local f = BAD .. "/sizes.yaml"
    assert.same({
      f .. ":5:13: memory must be a size of at least 1MiB like 64MiB, got 'lots'",
      f .. ":9:13: memory must be a size of at least 1MiB like 64MiB, got '512KiB'",
      f .. ":13:16: max_input must be a size like 1MiB, got 'huge'",
      f .. ":18:16: max_input (4194304 bytes) is larger than memory (2097152 bytes)",
    }, load_bad(f))
  end)

  it("reports bad ordering, attempts and `dlq: true`", function()
    local f = BAD .. "/values.yaml"
    assert.same({
      f .. ":5:15: ordering must be partition, key or none, got 'random'",
      f .. ":6:24: retry.attempts must be an integer from 1 to 1000, got '0'",
      f .. ":7:10: dlq takes a topic name or false (the default is \"<topic>.dlq\")",
      f .. ":11:24: retry.attempts must be an integer from 1 to 1000, got '2.5'",
    }, load_bad(f))
  end)

  it("reports a handler file that does not exist, at the handler value", function()
    local f = BAD .. "/missing_handler.yaml"
    assert.same({f .. ":4:14: handler file '" .. BAD .. "/../handlers/does-not-exist.lua' "
                 .. "cannot be read: No such file or directory"}, load_bad(f))
  end)

  it("reports missing name, match and handler, and an empty match list", function()
    local f = BAD .. "/missing_fields.yaml"
    assert.same({
      f .. ":2:5: route has no 'name'",
      f .. ":2:5: route '?' has no 'match'",
      f .. ":2:5: route '?' has no 'handler'",
      f .. ":4:12: match list is empty",
    }, load_bad(f))
  end)

  it("reports invalid and empty patterns at the pattern", function()
    local f = BAD .. "/bad_patterns.yaml"
    local errs = load_bad(f)
    assert.equal(3, #errs, table.concat(errs, "\n"))
    assert.matches("^" .. f:gsub("%p", "%%%0") .. ":3:12: invalid regex /orders%.%(/: ", errs[1])
    assert.equal(f .. ":6:19: empty topic pattern", errs[2])
    assert.equal(f .. ":6:23: empty regex pattern '//'", errs[3])
  end)

  it("rejects unknown librdkafka properties and properties kroute manages", function()
    local f = BAD .. "/kafka_props.yaml"
    local errs = load_bad(f)
    assert.equal(6, #errs, table.concat(errs, "\n"))
    assert.equal(f .. ":3:5: unknown librdkafka consumer property 'foo.bar'", errs[1])
    assert.equal(f .. ":4:5: librdkafka property 'group.id' is managed by kroute and cannot "
                 .. "be set in kafka.consumer", errs[2])
    assert.equal(f .. ":5:5: librdkafka property 'enable.auto.offset.store' is managed by "
                 .. "kroute and cannot be set in kafka.consumer", errs[3])
    -- a known property with a value librdkafka refuses: reported at the value
    assert.matches("^" .. f:gsub("%p", "%%%0")
                   .. ":6:25: kafka%.consumer%.session%.timeout%.ms: .*session%.timeout%.ms",
                   errs[4])
    assert.equal(f .. ":8:5: unknown librdkafka producer property 'linger.millis'", errs[5])
    assert.equal(f .. ":9:5: librdkafka property 'dr_msg_cb' is managed by kroute and cannot "
                 .. "be set in kafka.producer", errs[6])
  end)

  it("rejects `kafka:` set in two files of a folder, pointing at both", function()
    local d = BAD .. "/twokafka"
    assert.same({d .. "/b.yaml:5:1: 'kafka' is already set at " .. d .. "/a.yaml:1:1 "
                 .. "(at most one file may set it)"}, load_bad(d))
  end)

  it("rejects `kafka:` set in two files given as separate paths", function()
    local d = BAD .. "/twokafka"
    local errs = load_bad(d .. "/a.yaml", F .. "/full.yaml")
    assert.same({F .. "/full.yaml:1:1: 'kafka' is already set at " .. d .. "/a.yaml:1:1 "
                 .. "(at most one file may set it)"}, errs)
  end)

  it("rejects duplicate route names in one file, pointing at the first", function()
    local f = BAD .. "/duplicate_names.yaml"
    assert.same({f .. ":8:11: duplicate route name 'same' (first at " .. f .. ":2:5)"},
                load_bad(f))
  end)

  it("rejects a key given twice in one mapping instead of letting the last win", function()
    local f = BAD .. "/duplicate_keys.yaml"
    assert.same({f .. ":3:3: duplicate key 'group' (first at line 2)",
                 f .. ":9:5: duplicate key 'to' (first at line 7)"}, load_bad(f))
  end)

  it("rejects duplicate route names across files", function()
    local d = BAD .. "/dupfiles"
    assert.same({d .. "/two.yaml:6:11: duplicate route name 'shared' (first at "
                 .. d .. "/one.yaml:2:5)"}, load_bad(d))
  end)

  it("reports YAML syntax errors with their position", function()
    local f = BAD .. "/syntax.yaml"
    -- line 3 is "    match: in: out"; the second ':' is column 14
    assert.same({f .. ":3:14: mapping values are not allowed in this context"}, load_bad(f))
    local t = BAD .. "/syntax_tab.yaml"
    -- line 2 starts with a tab
    local errs = load_bad(t)
    assert.equal(1, #errs)
    assert.matches("^" .. t:gsub("%p", "%%%0") .. ":2:1: .*cannot start any token", errs[1])
  end)

  it("rejects a route whose `to` its own match would consume (a loop)", function()
    local f = BAD .. "/loop.yaml"
    assert.same({
      f .. ":5:9: route 'exact-loop' sends to 'orders', which its own match 'orders' would "
        .. "consume again (a loop)",
      f .. ":9:9: route 'glob-loop' sends to 'orders.enriched', which its own match "
        .. "'orders.*' would consume again (a loop)",
    }, load_bad(f)) -- `not-a-loop` sends to orders.dlq, which globs never match
  end)

  it("rejects unset ${VAR} without default, bad names and unterminated ${", function()
    local f = BAD .. "/env_unset.yaml"
    assert.is_nil(os.getenv("KROUTE_SPEC_SURELY_UNSET_VAR"))
    assert.same({
      f .. ":5:9: environment variable KROUTE_SPEC_SURELY_UNSET_VAR is not set "
        .. "(write ${KROUTE_SPEC_SURELY_UNSET_VAR:-default} for a default)",
      f .. ":6:12: bad variable name '${bad-name}'",
      f .. ":8:12: unterminated ${ in '${KROUTE_SPEC_UNTERMINATED'",
    }, load_bad(f))
  end)

  it("rejects a reply mode other than nest/none and a `requests` that is not a list", function()
    local f = BAD .. "/reply_bad.yaml"
    assert.same({f .. ":5:12: reply must be nest or none, got 'grpc'",
                 f .. ":6:15: requests must be a list of topics"}, load_bad(f))
  end)

  it("rejects a set of files that defines no route", function()
    local f = BAD .. "/only_kafka.yaml"
    local errs = load_bad(f)
    assert.equal(1, #errs)
    assert.equal(f .. ": no routes defined", errs[1])
  end)

  it("rejects a folder without route files", function()
    local d = F .. "/emptyfolder"
    assert.same({d .. ": no *.yaml route files in this folder"}, load_bad(d))
  end)

  it("rejects a path that does not exist", function()
    local p = F .. "/no-such-file.yaml"
    assert.same({p .. ": No such file or directory"}, load_bad(p))
  end)

  it("collects errors from every file of a load", function()
    local a, b = BAD .. "/unknown_route_key.yaml", BAD .. "/empty.yaml"
    local errs = load_bad(a, b)
    assert.equal(2, #errs)
    assert.matches("unknown_route_key%.yaml:5:5: ", errs[1])
    assert.equal(b .. ":1:1: empty route file", errs[2])
  end)
end)

-- A route change is reviewed with `kroute check` before it runs: reading a
-- route file must never run code, read files it was not meant to, hang,
-- take long, or show a secret.
describe("route files from an untrusted change", function()
  local dir
  before_each(function() -- symlinks resolved, as kroute shows handler roots
    dir = io.popen('cd "$(mktemp -d /tmp/kroute-config.XXXXXX)" && pwd -P'):read("l")
  end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  local function write(name, text)
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    f:write(text)
    f:close()
    return dir .. "/" .. name
  end

  local ROUTE = "routes:\n  - { name: a, match: in, handler: h.lua }\n"

  it("refuses librdkafka properties that load or run code, and any not allowed", function()
    local f = BAD .. "/kafka_code_props.yaml"
    assert.same({
      f .. ":3:5: kafka.consumer: librdkafka property 'plugin.library.paths' loads or runs "
        .. "code and is not allowed in route files",
      f .. ":4:5: kafka.consumer: librdkafka property 'statistics.interval.ms' is not allowed "
        .. "in route files (the README lists those that are, under Route files)",
      f .. ":7:5: kafka.producer: librdkafka property 'sasl.kerberos.kinit.cmd' loads or runs "
        .. "code and is not allowed in route files",
      f .. ":8:30: kafka.producer.sasl.kerberos.principal: may only hold letters, digits and "
        .. ". _ - / @ + = : , (librdkafka pastes it into a shell command)",
      f .. ":9:5: kafka.producer: librdkafka property 'ssl.engine.location' loads or runs "
        .. "code and is not allowed in route files",
    }, load_bad(f)) -- ssl.ca.location (a file to read) is allowed
  end)

  it("never loads a plugin library while checking (the error is ours, not dlopen's)",
     function()
    write("h.lua", "return function() end\n")
    local f = write("r.yaml", "kafka:\n  producer: { plugin.library.paths: " .. dir
                    .. "/nope.so }\n" .. ROUTE)
    local errs = load_bad(f)
    assert.equal(1, #errs)
    assert.matches("loads or runs code", errs[1])
    assert.is_nil(errs[1]:match("nope%.so")) -- dlopen's message would name the library
  end)

  it("rejects invalid Kafka topic names in match, to, dlq, emits and requests", function()
    local f = BAD .. "/topics.yaml"
    local rule = " is not a valid Kafka topic name (1 to 249 characters of a-z, A-Z, 0-9, "
                 .. "'.', '_' and '-'; not '.' or '..')"
    assert.same({
      f .. ":3:23: match 'bad topic'" .. rule,
      f .. ":5:9: to 'out/put'" .. rule,
      f .. ":6:10: dlq '..'" .. rule,
      f .. ":7:19: emits 'x$y'" .. rule,
      f .. ":8:16: requests is empty",
      f .. ":8:20: requests 'a:b'" .. rule,
    }, load_bad(f))
    write("h.lua", "return function() end\n")
    local long = write("long.yaml", ROUTE:gsub("match: in", "match: " .. ("t"):rep(250)))
    assert.matches("long%.yaml:2:23: match 't+' is not a valid Kafka topic name",
                   load_bad(long)[1])
  end)

  it("reports bad UTF-8 at the line and column of the bad byte", function()
    local f = BAD .. "/bad_utf8.yaml"
    -- line 5 is `    to: "caét<0xff>"`: the é is one column
    assert.same({f .. ":5:14: invalid leading UTF-8 octet"}, load_bad(f))
  end)

  it("keeps handlers under the route file's folder, symlinks resolved", function()
    local d = BAD .. "/outside"
    local errs = load_bad(d .. "/escape.yaml")
    assert.equal(2, #errs, table.concat(errs, "\n"))
    local real = errs[1]:match("is outside (.-), the folder")
    assert.truthy(real, errs[1])
    assert.equal(d .. "/escape.yaml:4:14: handler file '" .. d .. "/../../handlers/noop.lua' "
                 .. "is outside " .. real .. ", the folder handlers must be in (move it there, "
                 .. "or set `handler_root:` in the route file)", errs[1])
    assert.equal(d .. "/escape.yaml:7:14: handler file '" .. d .. "/inner/link.lua' is outside "
                 .. real .. ", the folder handlers must be in (move it there, or set "
                 .. "`handler_root:` in the route file)", errs[2])
    assert.matches("/outside$", real)
  end)

  it("lets `handler_root:` widen the folder handlers may come from", function()
    local cfg = load_ok(BAD .. "/outside/widened.yaml")
    assert.equal(BAD .. "/outside/../../handlers/noop.lua", route(cfg, "up").handler)
  end)

  it("never shows a file outside the folder, even one that does not parse as Lua", function()
    os.execute("mkdir '" .. dir .. "/routes'")
    write("passwd", "root:x:0:0:root:/root:/bin/bash\n")
    local f = write("routes/r.yaml", ROUTE:gsub("h%.lua", "../passwd"))
    local errs = load_bad(f)
    assert.equal(1, #errs)
    assert.equal(f .. ":2:36: handler file '" .. dir .. "/routes/../passwd' is outside "
                 .. dir .. "/routes, the folder handlers must be in (move it there, or set "
                 .. "`handler_root:` in the route file)", errs[1])
  end)

  it("refuses a FIFO, device or folder as a route file or handler, without blocking",
     function()
    assert(os.execute("mkfifo '" .. dir .. "/fifo.yaml' '" .. dir .. "/fifo.lua'"))
    os.execute("mkdir '" .. dir .. "/dir.lua'")
    -- a FIFO nobody writes to: opening it to read would block forever
    assert.same({dir .. "/fifo.yaml:1:1: not a regular file (a FIFO, device or folder cannot "
                 .. "be a route file)"}, load_bad(dir .. "/fifo.yaml"))
    local f = write("r.yaml", "routes:\n  - { name: a, match: in, handler: fifo.lua }\n"
                    .. "  - { name: b, match: in2, handler: dir.lua }\n")
    assert.same({f .. ":2:36: handler file '" .. dir .. "/fifo.lua' is not a regular file",
                 f .. ":3:37: handler file '" .. dir .. "/dir.lua' is not a regular file"},
                load_bad(f))
    -- and in a folder scan: a FIFO named like a route file is refused too
    os.remove(f)
    write("h.lua", "return function() end\n")
    write("ok.yaml", ROUTE)
    assert.same({dir .. "/fifo.yaml:1:1: not a regular file (a FIFO, device or folder cannot "
                 .. "be a route file)"}, load_bad(dir))
  end)

  it("names the variable, never its value, in an error about an expanded value", function()
    local home = assert(os.getenv("HOME"))
    write("h.lua", "return function() end\n")
    local f = write("r.yaml", table.concat({
      "routes:",
      "  - name: a",
      "    match: in",
      "    handler: h.lua",
      "    memory: ${HOME}",
      "    timeout: x${HOME}",
      "    to: ${HOME}",
      "  - name: b",
      "    match: /${HOME}(/",
      "    handler: h.lua",
    }, "\n") .. "\n")
    local errs = load_bad(f)
    assert.equal(4, #errs, table.concat(errs, "\n"))
    for _, e in ipairs(errs) do
      assert.is_nil(e:find(home, 1, true), e)
    end
    assert.equal(f .. ":5:13: memory must be a size of at least 1MiB like 64MiB, got "
                 .. "'${HOME}'", errs[1])
    assert.equal(f .. ":9:12: match '/${HOME}(/' is not a valid topic pattern", errs[4])
  end)

  it("bounds nesting depth instead of taking seconds on 100k `[`", function()
    local f = write("deep.yaml", "routes: " .. ("["):rep(100000) .. ("]"):rep(100000) .. "\n")
    local t0 = os.clock()
    assert.same({f .. ":1:72: nested more than 64 levels deep"}, load_bad(f))
    assert.is_true(os.clock() - t0 < 5) -- 21 s before the bound
  end)

  it("checks duplicate keys in linear time (80k keys in one mapping)", function()
    write("h.lua", "return function() end\n")
    -- 80k unknown librdkafka properties: each is also looked up once
    local lines = {"kafka:", "  consumer:"}
    for i = 1, 80000 do lines[#lines + 1] = ("    k%d: 1"):format(i) end
    lines[#lines + 1] = "    k7: 2"
    local f = write("wide.yaml", table.concat(lines, "\n") .. "\n" .. ROUTE)
    local t0 = os.clock()
    local errs = load_bad(f)
    assert.is_true(os.clock() - t0 < 5) -- 18 s with the pairwise check
    assert.equal(f .. ":80003:5: duplicate key 'k7' (first at line 9)", errs[1])
    assert.equal(80001 + 1, #errs) -- and each name is unknown
  end)

  it("refuses aliases that expand a small file into a huge one", function()
    local lines = {"a: &a [x, x, x, x, x, x, x, x, x, x]"}
    for i = 2, 9 do
      lines[i] = ("%s: &%s [%s]"):format(string.char(96 + i), string.char(96 + i),
                                         ("*" .. string.char(95 + i) .. ", "):rep(10):sub(1, -3))
    end
    lines[#lines + 1] = "routes: *i"
    local f = write("bomb.yaml", table.concat(lines, "\n") .. "\n")
    local t0 = os.clock()
    assert.same({f .. ":1:1: its aliases (*name) expand it to more than twice its size"},
                load_bad(f))
    assert.is_true(os.clock() - t0 < 5)
    -- an anchor used a few times is fine
    write("h.lua", "return function() end\n")
    local ok = write("anchors.yaml", "routes:\n  - { name: a, match: in, handler: h.lua, "
                     .. "retry: &r { attempts: 5 } }\n  - { name: b, match: in2, handler: h.lua, "
                     .. "retry: *r }\n")
    assert.equal(5, route(load_ok(ok), "b").attempts)
  end)
end)

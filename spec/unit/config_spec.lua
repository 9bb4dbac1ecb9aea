-- Route files (core/config.c) through the real loader: what `kroute run`
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
      assert.equal(1000000000 // 8, lists.max_input) -- an eighth of memory by default
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
      assert.equal(8 * 1024 * 1024, r.max_input)
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
      assert.equal("home" .. os.getenv("HOME"), r.to)
      assert.equal(os.getenv("PATH"), r.group)
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
      f .. ":9:1: unknown key 'version' in the route file (expected one of: kafka, routes)",
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

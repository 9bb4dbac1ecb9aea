-- Topic patterns (core/config/pattern.c): which topics a route's `match` takes,
-- and the subscription string handed to librdkafka for it.
local native = require "kroute.native"

local function matches(pattern, topic)
  local ok, err = native.match(pattern, topic)
  assert(ok ~= nil, err)
  return ok
end

local function check(pattern, yes, no)
  for _, t in ipairs(yes) do
    assert.is_true(matches(pattern, t), ("%s should match %s"):format(pattern, t))
  end
  for _, t in ipairs(no) do
    assert.is_false(matches(pattern, t), ("%s should not match %s"):format(pattern, t))
  end
end

describe("exact patterns", function()
  it("match only the same name, case-sensitively", function()
    check("payment.completed", {"payment.completed"},
          {"payment.completedx", "xpayment.completed", "Payment.completed", "payment",
           "payment-completed", ""})
  end)

  it("treat regex metacharacters literally", function()
    check("a+b", {"a+b"}, {"aab", "ab"})
    check("a.b", {"a.b"}, {"axb"})
  end)

  it("may name a DLQ topic explicitly", function()
    check("orders.dlq", {"orders.dlq"}, {"orders"})
  end)

  it("subscribe by name", function()
    assert.equal("payment.completed", native.subscription("payment.completed"))
    assert.equal("orders.dlq", native.subscription("orders.dlq"))
  end)
end)

local SAMPLE_TOPICS = {"orders.a", "orders.c", "orders.ab", "orders", "orders5", "a+b.c",
                       "aab.c", "x(y)z", "xyz", "a|bc", "ab", "vv.x", "v{2}.x", "^x$yz",
                       "orders.[ab", "orders.[ab]"}

-- the subscription regex `sub` of glob `g` must take topic `t` exactly when g does
local function same_topics(g, sub, t)
  local by_sub, err = native.match("/" .. sub .. "/", t)
  assert(by_sub ~= nil, ("glob %s gives subscription %s, not a valid regex: %s")
         :format(g, sub, tostring(err)))
  assert.equal(matches(g, t), by_sub, ("glob %s (subscription %s) on topic %s"):format(g, sub, t))
end

describe("glob patterns", function()
  it("* matches any run of characters, dots included, and the empty one", function()
    check("orders.*", {"orders.created", "orders.a.b", "orders."},
          {"orders", "orders-created", "xorders.created", "Orders.created"})
    check("*", {"anything", "a.b.c"}, {})
    check("*-events", {"user-events", "-events"}, {"user-events2", "user.events"})
  end)

  it("? matches exactly one character", function()
    check("orders.?", {"orders.a", "orders.1"}, {"orders.", "orders.ab"})
  end)

  it("[...] classes, ranges and [!...] negation", function()
    check("orders.[ab]", {"orders.a", "orders.b"}, {"orders.c", "orders.ab"})
    check("orders[0-9]", {"orders0", "orders7"}, {"ordersx", "orders10"})
    check("orders.[!ab]", {"orders.c", "orders.z"}, {"orders.a", "orders.b"})
  end)

  it("never match DLQ topics, even when the glob covers them", function()
    check("orders.*", {}, {"orders.dlq", "orders.eu.dlq"})
    check("*", {}, {"x.dlq", "payment.completed.dlq"})
    check("*.dlq", {}, {"orders.dlq"})
    -- only the ".dlq" suffix is special
    check("orders.*", {"orders.dlqx", "orders.dlq.replay", "orders.xdlq"}, {})
  end)

  it("subscribe with an anchored regex that escapes the literal parts", function()
    assert.equal("^orders\\..*$", native.subscription("orders.*"))
    assert.equal("^orders\\..$", native.subscription("orders.?"))
    assert.equal("^orders\\.[ab]$", native.subscription("orders.[ab]"))
    assert.equal("^orders\\.[^ab]$", native.subscription("orders.[!ab]"))
    assert.equal("^a\\+b\\..*$", native.subscription("a+b.*"))
    assert.equal("^.*$", native.subscription("*"))
    assert.equal("^orders-.*$", native.subscription("orders-*"))
  end)

  it("subscribe with a regex that takes the same topics as the glob", function()
    -- kroute filters what librdkafka delivers with match(); the subscription
    -- must be a valid regex covering the same names or topics go missing.
    for _, g in ipairs{"orders.*", "orders.?", "orders.[ab]", "orders.[!ab]", "orders[0-9]",
                       "a+b.*", "x(y)*", "a|b*", "v{2}.*", "^x$*"} do
      local sub = native.subscription(g)
      assert.is_string(sub, g)
      for _, t in ipairs(SAMPLE_TOPICS) do same_topics(g, sub, t) end
    end
  end)

  it("an unterminated [ in a glob is rejected or still subscribes with a valid regex",
     function()
    local sub, err = native.subscription("orders.[ab")
    if sub == nil then
      assert.matches("%[", err) -- rejected, naming the problem
    else
      for _, t in ipairs(SAMPLE_TOPICS) do same_topics("orders.[ab", sub, t) end
    end
  end)
end)

describe("regex patterns", function()
  it("are POSIX extended regexes between slashes", function()
    check("/^refund\\.(eu|us)$/", {"refund.eu", "refund.us"},
          {"refund.de", "refund.eu2", "xrefund.eu"})
    check("/^a+$/", {"a", "aaa"}, {"aab", ""})
    check("/^[a-z]{3}[0-9]+$/", {"abc1", "xyz123"}, {"ab1", "abcd1", "abc"})
  end)

  it("match anywhere in the name unless anchored", function()
    check("/order/", {"order", "preorders.x", "x.order"}, {"ordre"})
  end)

  it("never match DLQ topics", function()
    check("/order/", {}, {"order.dlq", "x.order.dlq"})
    check("/dlq$/", {"xdlq"}, {"x.dlq"})
    check("/.*/", {"a"}, {"a.dlq"})
  end)

  it("keep an anchored regex as the subscription", function()
    assert.equal("^refund\\.(eu|us)$", native.subscription("/^refund\\.(eu|us)$/"))
  end)

  it("wrap an unanchored regex so librdkafka treats it as one that matches anywhere",
     function()
    local sub = native.subscription("/order/")
    assert.equal("^.*(order)", sub)
    check("/" .. sub .. "/", {"preorders.x", "order"}, {"ordre"})
  end)

  it("report an invalid regex with the pattern", function()
    local ok, err = native.match("/orders.(/", "orders.x")
    assert.is_nil(ok)
    assert.matches("^invalid regex /orders%.%(/: .+", err)
    local sub, err2 = native.subscription("/a[/")
    assert.is_nil(sub)
    assert.matches("^invalid regex /a%[/: ", err2)
  end)
end)

describe("malformed patterns", function()
  it("reject the empty pattern and the empty regex", function()
    local ok, err = native.match("", "x")
    assert.is_nil(ok)
    assert.equal("empty topic pattern", err)
    ok, err = native.match("//", "x")
    assert.is_nil(ok)
    assert.equal("empty regex pattern '//'", err)
  end)

  it("treat a lone slash as an exact name, not a regex", function()
    check("/", {"/"}, {"x"})
    check("/abc", {"/abc"}, {"abc"})
  end)
end)

-- glibc's regex engine (kroute's matcher, and librdkafka's for the
-- subscription) recurses without bound on backreferences and copies a
-- counted repetition's atom that many times: such regexes are refused when
-- the route file is read, never matched.
describe("regexes the matcher cannot bound", function()
  local function refused(re, why)
    local ok, err = native.match(re, "payment.completed")
    assert.is_nil(ok, re .. " should be refused")
    assert.equal("invalid regex " .. re .. ": " .. why, err)
  end

  it("refuse backreferences, which crash glibc's matcher", function()
    refused("/(|)(\\1\\1)*/", "an empty alternative (write (x)? instead of (x|))")
    refused("/(a)(\\1\\1)*/", "backreferences like \\1 are not supported")
    refused("/^(x)\\1$/", "backreferences like \\1 are not supported")
  end)

  it("refuse GNU escapes that librdkafka may read differently", function()
    refused("/\\w+/", "a backslash may only escape punctuation (no \\w, \\b, \\< ...)")
    refused("/\\<order/", "a backslash may only escape punctuation (no \\w, \\b, \\< ...)")
  end)

  it("refuse huge and nested repetition counts", function()
    refused("/((a{1000}){1000}){1000}/", "a repetition count is above 256")
    refused("/((a{100}){100}){100}/", "too complex: it expands to more than 256 atoms "
            .. "(every {n,m} copies what it repeats)")
    refused("/[a-z]{0,200}[a-z]{0,200}/", "too complex: it expands to more than 256 atoms "
            .. "(every {n,m} copies what it repeats)")
  end)

  it("refuse deep nesting and very long regexes", function()
    refused("/" .. ("("):rep(9) .. "a" .. (")"):rep(9) .. "/", "groups are nested more than 8 deep")
    refused("/" .. ("a"):rep(257) .. "/", "longer than 256 characters")
    local ok, err = native.match(("a"):rep(513), "x")
    assert.is_nil(ok)
    assert.equal("topic pattern is longer than 512 characters", err)
  end)

  it("refuse what has nothing to repeat, unbalanced groups and classes", function()
    refused("/a**/", "two repetitions in a row (write (a+)* or a single one)")
    refused("/^*a/", "an anchor (^ or $) cannot be repeated")
    refused("/(a|b))/", "unmatched )")
    refused("/[[:alpha:]]/", "[:class:], [=x=] and [.x.] are not supported inside [...]")
    refused("/a{2,1}/", "malformed repetition {n,m}")
  end)

  it("still take the usual topic regexes, with the same topics", function()
    check("/^orders\\.(eu|us)\\.[a-z0-9_-]{1,200}$/", {"orders.eu.x1", "orders.us.a-b"},
          {"orders.de.x", "orders.eu."})
    check("/^(team\\.[a-z]+\\.)?events$/", {"events", "team.a.events"}, {"team.events"})
    check("/[.]v[0-9]+$/", {"users.v2"}, {"users.v"})
    check("/^a{2}b{1,3}$/", {"aab", "aabbb"}, {"ab", "aabbbb"})
  end)
end)

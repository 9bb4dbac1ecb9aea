-- Bounded string and table functions (core/runtime/strbound.c): handlers get
-- string.find/match/gmatch/gsub/rep and table.move/insert/remove/concat/sort
-- that give exactly stock Lua 5.4's results and errors, but stop at the
-- run's deadline even inside one long C call. busted runs in stock lua5.4,
-- so the global `string` and `table` here are the reference.
local ts = require("kroute.testsupport")

local LONG = 600000 -- ms: a deadline the differential cases never reach

-- One value as text, keeping the type (1 and 1.0 and "1" differ).
local function show(v)
  local t = math.type(v) or type(v)
  if t == "string" then return ("%q"):format(v) end
  return t .. ":" .. tostring(v)
end

-- A call's outcome as text. The function name in "bad argument #n to 'x'"
-- depends on where a function is stored, so it is left out.
local function outcome(f, ...)
  local r = table.pack(pcall(f, ...))
  if not r[1] then
    return "error: " .. tostring(r[2]):gsub("to '[^']*'", "to '?'")
  end
  local out = {}
  for i = 2, r.n do out[#out + 1] = show(r[i]) end
  return table.concat(out, ", ")
end

-- Every match gmatch yields (captures joined), at most 200 of them.
local function gmatch_all(gmatch, s, p, init)
  local out = {}
  for a, b, c in gmatch(s, p, init) do
    out[#out + 1] = show(a) .. "," .. show(b) .. "," .. show(c)
    if #out >= 200 then break end
  end
  return table.concat(out, ";")
end

local B = ts.bounded_lib(LONG)
local bs, bt = B.string, B.table

-- stock vs bounded for one string function and its arguments
local function same(name, ...)
  local want = outcome(string[name], ...)
  local got = outcome(bs[name], ...)
  local args = table.pack(...)
  for i = 1, args.n do args[i] = show(args[i]) end
  assert.are.equal(want, got, ("string.%s(%s)"):format(name, table.concat(args, ", ")))
end

local function same_gmatch(s, p, init)
  local want = outcome(gmatch_all, string.gmatch, s, p, init)
  local got = outcome(gmatch_all, bs.gmatch, s, p, init)
  assert.are.equal(want, got, ("gmatch(%q, %q, %s)"):format(s, p, tostring(init)))
end

-- all four pattern functions on one subject and pattern
local function same_all(s, p, init, repl)
  same("find", s, p, init)
  same("match", s, p, init)
  same_gmatch(s, p, init)
  same("gsub", s, p, repl or "<%0>")
end

describe("bounded pattern functions, against stock Lua 5.4", function()
  it("find: plain text, init, embedded zeros", function()
    local cases = {
      {"", ""}, {"alo", ""}, {"a\0o a\0o a\0o", "a", 1}, {"a\0o a\0o a\0o", "a\0o", 2},
      {"a\0a\0a\0a\0\0ab", "\0ab", 2}, {"a\0a\0a\0a\0\0ab", "b"}, {"a\0a\0a\0a\0\0ab", "b\0"},
      {"", "\0"}, {"alo123alo", "12"}, {"alo123alo", "^12"}, {"abc", "b", -1}, {"abc", "b", -2},
      {"abc", "b", -10}, {"abc", "", 4}, {"abc", "", 5}, {"abc", "", 0}, {"abc", "c", 3},
      {"abc", "c", 4}, {"a.b", ".", 1, true}, {"a+b", "+", 1, true}, {"a%b", "%", 1, true},
      {"a%b", "%%", 1, false}, {"a)b", ")"}, {"a)b", "a)"}, {"x]y", "]"}, {12345, 3},
      {"abab", "ab", 2}, {"aaa", "aa", 2}, {("a"):rep(50) .. "b", ("a"):rep(20) .. "b"},
      {"abc", "b", 1, nil}, {"abc", "[b]", 1, true}, {"abc", "[b]", 1, 0},
      {"abc", "b", math.maxinteger}, {"abc", "b", math.mininteger},
    }
    for _, c in ipairs(cases) do same("find", table.unpack(c, 1, 4)) end
  end)

  it("match: classes, sets, quantifiers, anchors", function()
    local cases = {
      {"aaab", ".*b"}, {"aaa", ".*a"}, {"b", ".*b"}, {"aaab", ".+b"}, {"aaa", ".+a"},
      {"b", ".+b"}, {"aaab", ".?b"}, {"aaa", ".?a"}, {"b", ".?b"}, {"aloALO", "%l*"},
      {"aLo_ALO", "%a*"}, {"aaab", "a*"}, {"aaa", "^.*$"}, {"aaa", "b*"}, {"aaa", "ab*a"},
      {"aba", "ab*a"}, {"aaab", "a+"}, {"aaa", "^.+$"}, {"aaa", "b+"}, {"aaa", "ab+a"},
      {"aba", "ab+a"}, {"a$a", ".$"}, {"a$a", ".%$"}, {"a$a", ".$."}, {"a$a", "$$"},
      {"a$b", "a$"}, {"a$a", "$"}, {"", "b*"}, {"aaa", "bb*"}, {"aaab", "a-b"},
      {"aaa", "^.-$"}, {"aabaaabaaabaaaba", "b.*b"}, {"aabaaabaaabaaaba", "b.-b"},
      {"alo xo", ".o$"}, {" \n isto e assim", "%S%S*"}, {" \n isto e assim", "%S*$"},
      {" \n isto e assim", "[a-z]*$"}, {"um caracter ? extra", "[^%sa-z]"}, {"", "a?"},
      {"a", "a?"}, {"abl", "a?b?l?"}, {"  ", "a?b?l?"}, {"aa", "^aa?a?a"},
      {"]]]abc", "]]"}, {"0alo alo", "%x*"}, {"alo alo", "%C+"}, {"(alo)", "%(a"},
      {"alo xyzK", "(%w+)K"}, {"254 K", "(%d*)K"}, {"alo ", "(%w*)$"}, {"alo ", "(%w+)$"},
      {"x\0y", "%z"}, {"x\0y", "[%z]"}, {"x\0y", "%Z+"}, {"\0\1\2", "[\0-\2]+"},
      {"a-b", "[a-]+"}, {"a-b", "[-b]+"}, {"a]b", "[]a]+"}, {"a]b", "[^]]+"}, {"a^b", "[%^]"},
      {"a^b", "[b^]+"}, {"abc", "[%a-z]"}, {"a-z", "[%a-z]+"}, {"Hello, World!", "%p+"},
      {"tab\tcr\rnl\n", "%c+"}, {"x1F9g", "%x+"}, {"UPPER lower", "%u+"}, {"UPPER lower", "%U+"},
      {"a.b,c", "%W"}, {"abc123", "%D+"}, {"abc", "%g+"}, {"abc", "%G"}, {"\255\128", "[\128-\255]+"},
      {"hello", "^hel"}, {"hello", "^el"}, {"hello", "lo$"}, {"hello", "^hello$"}, {"hello", "^$"},
      {"", "^$"}, {"^a", "^^a"}, {"a", "a$$"}, {"abc", "b", 0}, {"abc", ".", -1}, {"abc", ".", 10},
      {"abc", "()", 4}, {"abc", "()", 5}, {"key = value", "^(%w+)%s*=%s*(%w+)$"},
      {"  trim me  ", "^%s*(.-)%s*$"}, {"2024-01-31", "(%d+)-(%d+)-(%d+)"},
    }
    for _, c in ipairs(cases) do same("match", table.unpack(c, 1, 3)) end
  end)

  it("captures: position captures, nested, back-references, %b, %f", function()
    local cases = {
      {"hello", "()ll()"}, {"hello", "(h)(e)(l)(l)(o)"}, {"alo alo", "((a)(l)o)"},
      {"xyxy", "(xy)%1"}, {"xyxz", "(xy)%1"}, {'say "hi" now', "([\"'])(.-)%1"},
      {"aaaa", "(a*)%1"}, {"abab", "((a)b)%1"}, {"abab", "((a)b)%2"}, {"aa", "()%1"},
      {"f(a(b)c) g(x)", "%b()"}, {"[[x]]", "%b[]"}, {"((x)", "%b()"}, {"x)", "%b()"},
      {"abxyba", "%bab"}, {"aaa", "%baa"}, {"THE (quick) fox", "%f[%a]%w+"}, {"a", "%f[a]"},
      {"a", "%f[^a]"}, {"abc", "%f[%l]"}, {"abc", "%f[%L]"}, {"hello world", "%f[%w]%w+%f[%W]"},
      {"  alo aalo allo", "%f[%S].-%f[%s].-%f[%S]"}, {"x", "%f[%z]"}, {"x", "%f[^\0]"},
      {"", "()"}, {"abc", "(a)()(b)"}, {"abc", "((((((((((a))))))))))"}, {"a\0b", "(%z)"},
      {"xx", "(x)(x)%2%1"}, {"abba", "(a)(b)%2%1"}, {"a", "(()a)"},
    }
    for _, c in ipairs(cases) do same_all(c[1], c[2]) end
  end)

  it("malformed patterns raise stock's errors", function()
    local pats = {
      "%", "a%", "[a", "[^", "[", "[]", "[^]", "[a-", "[%", "[%]", "[a%]", "(()", "(", "a(",
      ")", "a)", "(a))", "%b", "%ba", "%f", "%fa", "%f[a", "%1", "(a)%2", "%0", "(a%1)",
      "%9", "(a)%1%3", ("(a)"):rep(33), ("()"):rep(32), ("()"):rep(33), "(a)(", "x*)",
    }
    for _, p in ipairs(pats) do same_all("a(a)a[a]", p) end
    same("find", ("x"):rep(1000), ("x?"):rep(300))
    same("match", ("x"):rep(1000), ("x?"):rep(300))
    same("match", ("x"):rep(300), ("x?"):rep(199) .. "x")
    same("gsub", ("a"):rep(250), ("(a"):rep(20) .. (")"):rep(20), "%1")
  end)

  it("gsub: string, table and function replacements, %0-%9, max n", function()
    local upper = function(x) return x:upper() end
    local cases = {
      {"hello world", "(%w+)", "%1 %1"}, {"hello world", "%w+", "%0 %0", 1},
      {"hello world from Lua", "(%w+)%s*(%w+)", "%2 %1"}, {"abc", "%w", "%1"},
      {"abc", "%w", "%2"}, {"abc", "(%w)", "%%%1"}, {"abc", "%w", "%"}, {"abc", "%w", "%x"},
      {"abc", "%w", "x%"}, {"abc", "()", "%1"}, {"abc", "(b)()", "[%2%1]"}, {"abc", "b", 42},
      {"abc", "b", 4.5}, {"abc", "%w", "x", 2}, {"abc", "%w", "x", 0}, {"abc", "%w", "x", -1},
      {"abc", "%w", "x", 2.5}, {"abc", "%w", "x", "2"}, {"abc", "b"}, {"abc", "b", true},
      {"abc", "b", nil}, {"abc", "b", "x", "y"}, {"abc", "", "-"}, {"abc", "%w*", "-"},
      {"abc", "b*", "-"}, {"aaa", "^a", "b"}, {"aaa", "^", "-"}, {"aaa", "$", "-"},
      {"hello world", "o", upper}, {"hello", "(l)(l)", function(a, b) return b .. a end},
      {"hello", "l", function() return nil end}, {"hello", "l", function() return false end},
      {"hello", "l", function() return 7 end}, {"hello", "l", function() return {} end},
      {"hello", "()l", function(p) return p end}, {"$name is $age", "%$(%w+)", {name = "lua"}},
      {"$name is $age", "%$(%w+)", {name = "lua", age = 30}}, {"abc", "%w", {a = true}},
      {"abc", "%w", {a = false}}, {"abc", "()", {}}, {"abc", "()", {[1] = "one"}},
      {"abc", "x", "y"}, {"", "", "e"}, {"a\0b", "%z", "0"}, {"f(a(b)c) g(x)", "%b()", ""},
      {"THE (quick) fox", "%f[%a]%w+", upper}, {"x = 1, y = 2", "(%w+) = (%w+)", "%2=%1"},
      {"abc", ".", {a = 1, b = 2.5}}, {("x"):rep(100), "x", "yy", 50},
    }
    for _, c in ipairs(cases) do same("gsub", table.unpack(c, 1, 4)) end
  end)

  it("gmatch: empty matches, anchors as literals, init", function()
    local cases = {
      {"a=1, b=2", "(%w+)=(%w+)"}, {"abc", ""}, {"abc", "%w*"}, {"abc", "b*"}, {"^a^a", "^a"},
      {"abc", "."}, {"abc", ".", 2}, {"abc", ".", -1}, {"abc", ".", 10}, {"abc", "", 4},
      {"abc", "", 5}, {"abc", "()", -10}, {"one two  three", "%a+"}, {"x", "()"}, {"", ".*"},
      {"a,b,,c", "([^,]*)"}, {"key=val;k2=v2", "(%w+)=(%w+)"}, {"aaa", "a-"}, {"aaa", "a?"},
    }
    for _, c in ipairs(cases) do same_gmatch(c[1], c[2], c[3]) end
    assert.has_error(function() bs.gmatch("abc") end)
    assert.has_error(function() bs.gmatch("abc", "(")() end, "unfinished capture")
  end)

  it("agrees on 2000 random subjects and patterns", function()
    -- a small alphabet so that random patterns often match
    local chars = {"a", "a", "b", "b", "c", " ", "x", "(", ")", "[", "]", "%", "-", ".", "1", "\0"}
    local items = {
      "a", "b", "c", " ", ".", "%a", "%s", "%d", "%w", "%S", "%p", "%A", "%%", "%(", "%)", "%.",
      "[ab]", "[^a]", "[a-c]", "[%s%d]", "[%]]", "[^%a]", "x", "1", "%z",
    }
    local quants = {"", "", "", "*", "+", "-", "?"}
    local rng = 20261231
    local function rand(n) -- a fixed LCG: the same cases on every run and Lua build
      rng = (rng * 1103515245 + 12345) % 2147483648
      return rng % n + 1
    end
    local function subject()
      local out = {}
      for i = 1, rand(14) - 1 do out[i] = chars[rand(#chars)] end
      return table.concat(out)
    end
    local function pattern()
      local out, open = {}, 0
      if rand(4) == 1 then out[#out + 1] = "^" end
      for _ = 1, rand(6) do
        local r = rand(20)
        if r == 1 then out[#out + 1] = "("; open = open + 1
        elseif r == 2 and open > 0 then out[#out + 1] = ")"; open = open - 1
        elseif r == 3 then out[#out + 1] = "()"
        elseif r == 4 then out[#out + 1] = "%b()"
        elseif r == 5 then out[#out + 1] = "%f[%w]"
        elseif r == 6 then out[#out + 1] = "%" .. rand(3)
        elseif r == 7 then out[#out + 1] = ({"%", "[", "(", ")", "%b", "%f"})[rand(6)]
        else out[#out + 1] = items[rand(#items)] .. quants[rand(#quants)] end
      end
      while open > 0 and rand(3) > 1 do out[#out + 1] = ")"; open = open - 1 end
      if rand(5) == 1 then out[#out + 1] = "$" end
      return table.concat(out)
    end
    local repls = {"<%0>", "%1", "%2-%1", "%%", "x", ""}
    for _ = 1, 2000 do
      local s, p = subject(), pattern()
      local init = rand(3) == 1 and rand(#s + 3) - 2 or nil
      same_all(s, p, init, repls[rand(#repls)])
    end
  end)
end)

describe("bounded string.rep", function()
  it("gives stock results and errors", function()
    local cases = {
      {"ab", 3}, {"ab", 3, ","}, {"", 5, ","}, {"x", 0}, {"x", -1}, {"x", 1, "sep"},
      {"ab", 10, ""}, {"", 0, ""}, {"abc", 2 ^ 31}, {"x", 1.5}, {"x", "3"}, {3, 2, 1},
      {"x", 2 ^ 30, "yy"}, {"\0", 4, "\0\0"}, {"abc", 7, "--"}, {"x"}, {nil, 1},
    }
    for _, c in ipairs(cases) do same("rep", table.unpack(c, 1, 3)) end
  end)

  it("returns an empty result at once, however large n is", function()
    local t0 = ts.monotonic()
    assert.are.equal("", bs.rep("", 1e15))
    assert.are.equal("", bs.rep("", math.maxinteger, ""))
    assert.is_true(ts.monotonic() - t0 < 2000)
  end)

  it("refuses a result larger than the memory limit before building it", function()
    local lim = ts.bounded_lib(LONG, 1000).string
    assert.are.equal(1000, #lim.rep("x", 1000))
    assert.are.equal(998, #lim.rep("ab", 333, "c"))
    local ok, err = pcall(lim.rep, "x", 1001)
    assert.is_false(ok)
    assert.matches("^not enough memory", err)
    ok, err = pcall(lim.rep, "x", 1e9) -- 1 GB: refused, not allocated
    assert.is_false(ok)
    assert.matches("^not enough memory", err)
    ok, err = pcall(lim.rep, "x", 1e12)
    assert.is_false(ok)
    assert.matches("resulting string too large", err)
  end)
end)

describe("bounded table functions, against stock Lua 5.4", function()
  -- A fresh argument list per run (the functions mutate their tables),
  -- and the outcome plus the tables' contents afterwards.
  local function table_text(t)
    if type(t) ~= "table" then return show(t) end
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return show(a) < show(b) end)
    local out = {}
    for _, k in ipairs(keys) do out[#out + 1] = show(k) .. "=" .. show(t[k]) end
    return "{" .. table.concat(out, " ") .. "}"
  end
  local function run(f, make)
    local args = table.pack(make())
    local res = outcome(f, table.unpack(args, 1, args.n))
    local after = {}
    for i = 1, args.n do after[i] = table_text(args[i]) end
    -- addresses differ between runs: "table: 0x55..." -> "table"
    return (res .. " | " .. table.concat(after, " ")):gsub("(%a+): 0x%x+", "%1")
  end
  local function same_t(name, make)
    assert.are.equal(run(table[name], make), run(bt[name], make), "table." .. name)
  end
  local function seq(n)
    local t = {}
    for i = 1, n do t[i] = i * 10 end
    return t
  end
  local function proxy(n) -- a table-like object through metamethods
    local store = seq(n)
    return setmetatable({}, {
      __index = store,
      __newindex = function(_, k, v) store[k] = v end,
      __len = function() return #store end,
    })
  end

  it("table.move", function()
    local cases = {
      function() return seq(5), 1, 3, 2 end, function() return seq(5), 2, 5, 1 end,
      function() return seq(5), 1, 5, 3, {} end, function() return seq(5), 3, 1, 1 end,
      function() return seq(5), 1, 0, 10 end, function() return seq(3), -2, 2, 5 end,
      function() return seq(5), 1, 5, 1 end, function() local t = seq(4); return t, 1, 4, 3, t end,
      function() return {}, 1, math.maxinteger, 2 end, function() return {}, -1, math.maxinteger, 2 end,
      function() return {}, 1, 2, math.maxinteger end, function() return {}, math.mininteger, -1, 1 end,
      function() return 5, 1, 2, 3 end, function() return {}, 1, 2, 3, 4 end,
      function() return {}, "x", 2, 3 end, function() return {}, 1.5, 2, 3 end,
      function() return proxy(4), 1, 4, 2 end, function() return seq(3), 1, 3, 1, proxy(0) end,
      function() return "abc", 1, 2, 1, {} end, function() return {}, 1, 1, 1, "abc" end,
    }
    for _, make in ipairs(cases) do same_t("move", make) end
  end)

  it("table.insert and table.remove", function()
    local ins = {
      function() return seq(3), 99 end, function() return seq(3), 1, 99 end,
      function() return seq(3), 4, 99 end, function() return seq(3), 5, 99 end,
      function() return seq(3), 0, 99 end, function() return {}, 1, 99 end,
      function() return seq(3), 1, 2, 3 end, function() return seq(3) end,
      function() return seq(3), "x", 1 end, function() return proxy(3), 2, 99 end,
      function() return 7, 1 end, function() return seq(3), nil end,
      function() return seq(3), -1, 99 end, function() return seq(3), math.mininteger, 1 end,
    }
    for _, make in ipairs(ins) do same_t("insert", make) end
    local rem = {
      function() return seq(3) end, function() return seq(3), 1 end, function() return seq(3), 3 end,
      function() return seq(3), 4 end, function() return seq(3), 5 end, function() return {} end,
      function() return {}, 0 end, function() return {}, 1 end, function() return {}, 5 end,
      function() return seq(3), 0 end, function() return proxy(4), 2 end, function() return "x" end,
      function() return seq(3), -1 end,
    }
    for _, make in ipairs(rem) do same_t("remove", make) end
  end)

  it("table.concat", function()
    local cases = {
      function() return seq(3) end, function() return seq(3), ", " end,
      function() return seq(5), "-", 2, 4 end, function() return seq(5), "-", 4, 2 end,
      function() return seq(3), "-", 3, 3 end, function() return {1, {}, 3} end,
      function() return {1, 2}, "", 1, 3 end, function() return {"a", 2.5, "c"}, 1 end,
      function() return {} end, function() return "abc" end, function() return seq(2), {} end,
      function() return proxy(3), "+" end, function() return seq(3), nil, "x" end,
      function() return setmetatable({}, {__index = function(_, i) return "v" .. i end}), "", 1, 5 end,
    }
    for _, make in ipairs(cases) do same_t("concat", make) end
  end)

  it("table.sort", function()
    local function nums(n)
      local t, rng = {}, 7
      for i = 1, n do rng = (rng * 69069 + 1) % 4294967296; t[i] = rng end
      return t
    end
    local cases = {
      function() return nums(10) end, function() return nums(300) end,
      function() return nums(20000) end, -- past the unchecked size: counted comparisons
      function() return nums(300), function(a, b) return a > b end end,
      function() return {"b", "c", "a"} end, function() return {3, 1, "x"} end,
      function() return {3, 2, 1}, 3 end, function() return {}, 3 end, function() return {1}, 3 end,
      function() return 5 end, function() return proxy(6), function(a, b) return a > b end end,
      function() return {3, 1, 2}, function() return true end end,
      function() return {3, 1, 2}, function() error("boom") end end,
      function() return seq(20), function(a, b) return a % 7 < b % 7 end end,
    }
    for _, make in ipairs(cases) do same_t("sort", make) end
  end)
end)

describe("work a count hook cannot interrupt stops at the deadline", function()
  -- Each call gets a 100 ms deadline; stock Lua would run for minutes or
  -- forever. "well under 2 s" leaves room for a loaded machine.
  local function times_out(f, ...)
    local lib = ts.bounded_lib(100)
    local t0 = ts.monotonic()
    local ok, err = pcall(f(lib), ...)
    local took = ts.monotonic() - t0
    assert.is_false(ok)
    assert.matches("^timeout: ran longer than 100 ms", tostring(err))
    assert.is_true(took < 2000, ("stopped after %d ms"):format(took))
  end

  it("the trim idiom on 200 KB of spaces", function()
    local s = "a" .. (" "):rep(200000) .. "b"
    times_out(function(l) return l.string.match end, s, "^%s*(.-)%s*$")
    times_out(function(l) return l.string.gsub end, s, "^%s*(.-)%s*$", "%1")
    times_out(function(l) return l.string.find end, s, "%s*$")
  end)

  it("quadratic gsub, gmatch and back-references", function()
    local s = ("a"):rep(200000)
    times_out(function(l) return l.string.gsub end, s, "a-b", "")
    times_out(function(l) return function(...) for _ in l.string.gmatch(...) do end end end, s, "a*b")
    times_out(function(l) return l.string.match end, s, "(a-)%1b") -- no match: every start, every length
    times_out(function(l) return l.string.find end, ("(x"):rep(30000), "%b()")
  end)

  it("table.move, insert, remove, concat and sort over huge ranges", function()
    times_out(function(l) return l.table.move end, {}, 1, 1e15, 2)
    times_out(function(l) return l.table.move end, {}, 1, 1e15, 1, {})
    -- 51 entries whose length (a border) is 2^50
    local function sparse()
      local t = {}
      for k = 50, 0, -1 do t[1 << k] = k end
      return t
    end
    assert.are.equal(1 << 50, #sparse())
    times_out(function(l) return l.table.insert end, sparse(), 1, "x")
    times_out(function(l) return l.table.remove end, sparse(), 1)
    local empties = setmetatable({}, {__index = function() return "" end})
    times_out(function(l) return l.table.concat end, empties, "", 1, 1e15)
    local zeros = setmetatable({}, {
      __len = function() return 2 ^ 31 - 2 end,
      __index = function() return 0 end,
      __newindex = function() end,
    })
    times_out(function(l) return l.table.sort end, zeros)
  end)

  it("keeps raising on later calls once the deadline has passed (pcall does not escape)", function()
    local lib = ts.bounded_lib(50)
    local s = "a" .. (" "):rep(100000) .. "b"
    assert.has_error(function() lib.string.match(s, "^%s*(.-)%s*$") end)
    assert.has_error(function() lib.table.move({}, 1, 1e15, 2) end)
  end)
end)

describe("bounded functions on everyday inputs", function()
  -- Figures, not pass/fail on speed: the ratio is printed for the report;
  -- the bound only catches a pathological slowdown.
  it("cost about what stock costs", function()
    local line = "  user=alice id=42 action=login ok  "
    local list = {}
    for i = 1, 1000 do list[i] = (i * 7919) % 1009 end
    local work = {
      {"trim", function(S) for _ = 1, 1e5 do S.match(line, "^%s*(.-)%s*$") end end},
      {"find plain", function(S) for _ = 1, 1e5 do S.find(line, "action", 1, true) end end},
      {"match kv", function(S) for _ = 1, 1e5 do S.match(line, "id=(%d+)") end end},
      {"gsub", function(S) for _ = 1, 2e4 do S.gsub(line, "%w+", "<%0>") end end},
      {"gmatch", function(S) for _ = 1, 2e4 do for _ in S.gmatch(line, "(%w+)=(%w+)") do end end end},
      {"rep", function(S) for _ = 1, 1e5 do S.rep("ab", 20, ",") end end},
      {"sort", function(_, T) for _ = 1, 50 do T.sort(table.move(list, 1, #list, 1, {})) end end},
      {"sort 50000", function(_, T)
        local big = {}
        for i = 1, 50000 do big[i] = (i * 7919) % 50021 end
        T.sort(big)
      end},
      {"sort comp", function(_, T)
        for _ = 1, 20 do T.sort(table.move(list, 1, #list, 1, {}), function(a, b) return a > b end) end
      end},
      {"insert/remove", function(_, T)
        local t = table.move(list, 1, #list, 1, {})
        for _ = 1, 500 do T.insert(t, 1, 0); T.remove(t, 1) end
      end},
      {"concat", function(_, T) for _ = 1, 2000 do T.concat(list, ",") end end},
    }
    for _, w in ipairs(work) do
      local t0 = os.clock(); w[2](string, table); local stock = os.clock() - t0
      t0 = os.clock(); w[2](bs, bt); local bounded = os.clock() - t0
      print(("  %-13s stock %.3fs bounded %.3fs ratio %.2f"):format(w[1], stock, bounded,
                                                                     bounded / stock))
      assert.is_true(bounded < stock * 10 + 0.05, w[1])
    end
  end)
end)

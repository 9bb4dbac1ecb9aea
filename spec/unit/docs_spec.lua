-- The Markdown documents of the repository (README.md and the READMEs
-- beside the code) stay linked: every relative link points at a file that
-- exists, and every #anchor at a heading of the file it names, with
-- anchors made the way GitHub makes them. Links inside code are not links.
local scratch = require "support.scratch"

-- GitHub's heading anchor: lowercase; drop everything but letters, digits,
-- spaces, '-' and '_'; spaces become '-'. Non-ASCII bytes are dropped too:
-- right for the arrows and signs in kroute's headings (GitHub drops them),
-- wrong for accented letters, which no heading here uses.
local function slug(heading)
  local s = heading:gsub("%[([^%]]*)%]%([^)]*%)", "%1") -- [text](url) -> text
  s = s:lower():gsub("[^%w _%-]", ""):gsub(" ", "-")
  return s
end

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

-- Lines outside fenced code blocks, with inline code spans blanked out
-- (kept when `keep_code`: a heading's anchor includes its code's text).
local function prose_lines(text, keep_code)
  local out, fenced = {}, false
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if line:match("^%s*```") or line:match("^%s*~~~") then
      fenced = not fenced
      out[#out + 1] = ""
    elseif fenced then
      out[#out + 1] = ""
    else
      out[#out + 1] = keep_code and line or (line:gsub("`[^`]*`", "``"))
    end
  end
  return out
end

local anchor_cache = {}
local function anchors(path)
  if anchor_cache[path] then return anchor_cache[path] end
  local set, seen = {}, {}
  for _, line in ipairs(prose_lines(read(path) or "", true)) do
    local h = line:match("^#+%s+(.-)%s*#*%s*$")
    if h then
      local base = slug(h)
      local n = seen[base]
      set[n and (base .. "-" .. n) or base] = true
      seen[base] = (n or 0) + 1
    end
  end
  anchor_cache[path] = set
  return set
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- Collapses "a/b/../c" and "./" so paths can be compared and opened.
local function normalize(path)
  local parts = {}
  for part in path:gmatch("[^/]+") do
    if part == ".." and #parts > 0 and parts[#parts] ~= ".." then
      parts[#parts] = nil
    elseif part ~= "." then
      parts[#parts + 1] = part
    end
  end
  return (path:sub(1, 1) == "/" and "/" or "") .. table.concat(parts, "/")
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

--- Every broken link of the Markdown file `path`, as "path:line: message".
local function broken_links(path)
  local problems = {}
  local raw = read(path)
  if not raw then return { path .. ": cannot be read" } end
  for i, line in ipairs(prose_lines(raw)) do
    for target in line:gmatch("%]%(([^)%s]+)%)") do
      if not target:match("^%a[%w+.-]*:") then -- http:, https:, mailto: are not checked
        local file, anchor = target:match("^([^#]*)#?(.*)$")
        local dest = file == "" and path or normalize(dirname(path) .. "/" .. file)
        if not exists(dest) then
          problems[#problems + 1] = ("%s:%d: %s: no such file %s"):format(path, i, target, dest)
        elseif anchor ~= "" then
          if not dest:match("%.md$") then
            problems[#problems + 1] = ("%s:%d: %s: an anchor into a file that is not Markdown")
                                      :format(path, i, target)
          elseif not anchors(dest)[anchor] then
            problems[#problems + 1] = ("%s:%d: %s: %s has no heading with anchor #%s")
                                      :format(path, i, target, dest, anchor)
          end
        end
      end
    end
  end
  return problems
end

local function markdown_files()
  local p = assert(io.popen("find . -name '*.md' -not -path './.*' -not -path '*/node_modules/*' | sort"))
  local files = {}
  for line in p:lines() do files[#files + 1] = line:gsub("^%./", "") end
  p:close()
  return files
end

describe("the repository's Markdown documents", function()
  it("include the README and the READMEs beside the code", function()
    local files = {}
    for _, f in ipairs(markdown_files()) do files[f] = true end
    for _, f in ipairs({ "README.md", "spec/README.md", "spec/bench/README.md",
                         "examples/nestjs/README.md", "core/README.md" }) do
      assert.is_true(files[f] == true, f .. " is missing")
    end
  end)

  it("link only to files and headings that exist", function()
    local problems = {}
    for _, f in ipairs(markdown_files()) do
      for _, p in ipairs(broken_links(f)) do problems[#problems + 1] = p end
    end
    assert.are.same({}, problems)
  end)

  it("have a table of contents in the README that names every section", function()
    local readme = assert(read("README.md"))
    local toc = {}
    for anchor in readme:match("## Contents\n(.-)\n## "):gmatch("%]%(#([^)]+)%)") do
      toc[anchor] = true
    end
    local missing = {}
    for _, line in ipairs(prose_lines(readme, true)) do
      local h = line:match("^## (.+)$")
      if h and h ~= "Contents" and not toc[slug(h)] then missing[#missing + 1] = h end
    end
    assert.are.same({}, missing)
  end)
end)

describe("the link checker", function()
  local dir
  before_each(function() dir = scratch.dir("docs") end)
  after_each(function() scratch.remove(dir) end)

  it("finds a missing file, a missing anchor and a good link apart", function()
    scratch.write(dir, "other.md", "# Other\n\n## Delivery `semantics` & more\n\n## Twice\n\n## Twice\n")
    local doc = scratch.write(dir, "doc.md", table.concat({
      "# Doc",
      "[ok](other.md#delivery-semantics--more) [ok2](other.md#twice-1) [self](#doc)",
      "[gone](missing.md) [bad anchor](other.md#nowhere) [web](https://example.com/x)",
      "`[in code](missing-too.md)`",
      "```",
      "[fenced](missing-three.md)",
      "```",
    }, "\n"))
    local problems = broken_links(doc)
    assert.equal(2, #problems, table.concat(problems, "\n"))
    assert.matches("doc.md:3: missing.md: no such file", problems[1], 1, true)
    assert.matches("other.md#nowhere: .* has no heading with anchor #nowhere", problems[2])
  end)

  it("makes anchors as GitHub does", function()
    assert.equal("a-tour-one-route-file-one-handler", slug("A tour: one route file, one handler"))
    assert.equal("how-make-test-is-organised", slug("How `make test` is organised"))
    assert.equal("requestreply-against-nestjs", slug("Request/reply against NestJS"))
    assert.equal("scale-1--3", slug("scale 1 → 3"))
  end)
end)

-- package_spec: `make deb` builds the Debian package, checked from its
-- control and data archives (files in place, Depends, conffiles, maintainer
-- scripts, the unit). As root on Debian with no kroute package or user there
-- already, it is also installed for real (dpkg -i), run (--version, check and
-- test on the shipped examples, as the kroute user too) and purged again,
-- leaving the machine as it was; anywhere else that part is pending.
local VERSION = assert(io.open("Makefile")):read("a"):match("\nVERSION%s*:=%s*(%S+)")

-- sh(cmd) -> output, exit status (stderr included)
local function sh(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  local body, rc = out:match("^(.-)rc=(%d+)\n$")
  return body, tonumber(rc)
end

local function must(cmd)
  local out, rc = sh(cmd)
  assert(rc == 0, cmd .. " failed (" .. tostring(rc) .. "):\n" .. out)
  return out
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function exists(path) return select(2, sh("test -e " .. q(path) .. " || test -L " .. q(path))) == 0 end

local deb, arch, entries, scratch

-- ./path -> {mode = "-rwxr-xr-x", owner = "root/root", target = link}
local function contents()
  local t = {}
  for line in must("dpkg-deb -c " .. q(deb)):gmatch("[^\n]+") do
    local mode, owner, rest = line:match("^(%S+)%s+(%S+)%s+%d+%s+%S+%s+%S+%s+(.-)$")
    local path, target = rest:match("^(.-) %-> (.*)$")
    t[path or rest] = { mode = mode, owner = owner, target = target }
  end
  return t
end

local function field(name) return (must("dpkg-deb -f " .. q(deb) .. " " .. name):gsub("\n$", "")) end

local function depends_names()
  local names = {}
  for alt in field("Depends"):gmatch("[^,]+") do names[alt:match("^%s*([%w%.%+%-]+)")] = true end
  return names
end

local function extract(path)
  return must("dpkg-deb --fsys-tarfile " .. q(deb) .. " | tar -xOf - " .. q(path))
end

lazy_setup(function()
  local out = must("make -s deb")
  deb = out:match("([^\n]+%.deb)\n?$")
  arch = must("dpkg --print-architecture"):gsub("%s", "")
  entries = contents()
  scratch = must("mktemp -d"):gsub("%s+$", "")
  must("dpkg-deb -x " .. q(deb) .. " " .. q(scratch .. "/root") .. " && dpkg-deb -e " .. q(deb) .. " " .. q(scratch .. "/DEBIAN"))
end)

lazy_teardown(function()
  if scratch then sh("rm -rf " .. q(scratch)) end
end)

describe("make deb", function()
  it("builds kroute_VERSION_ARCH.deb with the Makefile's version", function()
    assert.is_truthy(VERSION)
    assert.equal(".build/deb/kroute_" .. VERSION .. "_" .. arch .. ".deb", deb)
    assert.equal("kroute", field("Package"))
    assert.equal(VERSION, field("Version"))
    assert.equal(arch, field("Architecture"))
    assert.is_truthy(field("Maintainer"):match("^.+ <.+@.+>$"))
  end)

  it("ships the binary, Lua library, native module, man page, completion and unit in place", function()
    local want = {
      ["./usr/bin/kroute"] = "-rwxr-xr-x",
      ["./usr/share/kroute/lua/kroute/testing.lua"] = "-rw-r--r--",
      ["./usr/lib/kroute/lua/kroute/native.so"] = "-rw-r--r--",
      ["./usr/share/man/man1/kroute.1.gz"] = "-rw-r--r--",
      ["./usr/share/bash-completion/completions/kroute"] = "-rw-r--r--",
      ["./lib/systemd/system/kroute.service"] = "-rw-r--r--",
      ["./etc/default/kroute"] = "-rw-r--r--",
      ["./etc/kroute/routes/README"] = "-rw-r--r--",
      ["./usr/share/doc/kroute/copyright"] = "-rw-r--r--",
      ["./usr/share/kroute/routes/shop.yaml"] = "-rw-r--r--",
      ["./usr/share/kroute/examples/payments/routes.yaml"] = "-rw-r--r--",
      ["./usr/share/kroute/examples/payments/handlers/ranking.lua"] = "-rw-r--r--",
      ["./usr/share/kroute/examples/welcome/routes.yaml"] = "-rw-r--r--",
      ["./usr/share/kroute/examples/systemd/kroute.service"] = "-rw-r--r--",
    }
    for path, mode in pairs(want) do
      assert.is_table(entries[path], path .. " missing from the package")
      assert.equal(mode, entries[path].mode, path)
    end
    assert.equal("../../kroute/examples", entries["./usr/share/doc/kroute/examples"].target)
    for path, e in pairs(entries) do
      assert.equal("root/root", e.owner, path)
      assert.is_nil(path:match("^%./usr/local"), path)
      assert.is_nil(path:match("node_modules"), path)
      assert.is_nil(path:match("%.build"), path)
    end
  end)

  it("has every repository example folder and route file", function()
    for dir in must("cd examples && ls -d */"):gmatch("[^\n]+") do
      for f in must("cd examples && find " .. q(dir) .. " -type f"):gmatch("[^\n]+") do
        assert.is_table(entries["./usr/share/kroute/examples/" .. f], "examples/" .. f)
      end
    end
    for f in must("ls routes/*.yaml"):gmatch("[^\n]+") do
      assert.is_table(entries["./usr/share/kroute/" .. f], f)
    end
  end)

  it("compiles the binary for /usr (no /usr/local default Lua folder) and strips it", function()
    local bin = scratch .. "/root/usr/bin/kroute"
    assert.equal(0, select(2, sh("grep -q /usr/share/kroute/lua " .. q(bin))))
    assert.equal(1, select(2, sh("grep -q /usr/local " .. q(bin))))
    for _, f in ipairs { bin, scratch .. "/root/usr/lib/kroute/lua/kroute/native.so" } do
      local sections = must("readelf -S " .. q(f))
      assert.is_nil(sections:match("%.symtab"), f .. " not stripped")
      assert.is_nil(sections:match("%.debug_"), f .. " not stripped")
    end
  end)

  it("ships the native module kroute test needs, without the test-only kroute.testsupport", function()
    local dir = q(scratch .. "/root/usr/lib/kroute/lua")
    local out = must("env -u LUA_PATH LUA_CPATH=" .. dir .. "/?.so lua5.4 -e '"
      .. "local n = require \"kroute.native\"; "
      .. "print(type(n.vm), type(n.load_config), type(n.json), type(n.testsupport), "
      .. "(pcall(require, \"kroute.testsupport\")))'")
    assert.equal("function\tfunction\ttable\tnil\tfalse\n", out)
  end)

  it("depends on the package of every shared library the binary and module link, and adduser", function()
    local deps = depends_names()
    assert.is_true(deps.adduser)
    for _, f in ipairs { "/usr/bin/kroute", "/usr/lib/kroute/lua/kroute/native.so" } do
      local file = q(scratch .. "/root" .. f)
      local ldd = must("ldd " .. file)
      for lib in must("readelf -d " .. file):gmatch("NEEDED%)%s+Shared library: %[([^%]]+)%]") do
        -- where the loader finds the library, then the package that owns it
        local path = ldd:match("%s" .. lib:gsub("%p", "%%%0") .. " => (%S+)")
        assert.is_string(path, lib .. " not found by ldd:\n" .. ldd)
        local real = must("readlink -f " .. q(path)):gsub("%s+$", "")
        -- (with merged /usr, dpkg may know the library by either name)
        local owner = must("dpkg -S " .. q(path) .. " 2>/dev/null || dpkg -S " .. q(real) .. " 2>/dev/null")
          :match("^([^:,%s]+)")
        assert.is_true(deps[owner] == true, f .. " links " .. lib .. " from " .. owner .. ", not in Depends: " .. field("Depends"))
      end
    end
    assert.is_nil(deps["lua-cjson"]) -- kroute has its own JSON codec
  end)

  it("marks every file under /etc, and only those, as conffiles", function()
    local conf = {}
    for line in io.lines(scratch .. "/DEBIAN/conffiles") do conf[line] = true end
    local etc = {}
    for path, e in pairs(entries) do
      if path:match("^%./etc/") and e.mode:sub(1, 1) == "-" then etc[path:sub(2)] = true end
    end
    assert.same(etc, conf)
    assert.is_true(conf["/etc/default/kroute"])
  end)

  it("has a unit running /usr/bin/kroute as the kroute user, with ExecReload and the broker list from /etc/default/kroute", function()
    local unit = extract("./lib/systemd/system/kroute.service")
    assert.is_truthy(unit:match("\nExecReload=/bin/kill %-HUP %$MAINPID\n"))
    assert.is_truthy(unit:match("\nUser=kroute\n"))
    assert.is_truthy(unit:match("\nExecStartPre=/usr/bin/kroute check /etc/kroute/routes\n"))
    assert.is_truthy(unit:match("\nExecStart=/usr/bin/kroute run %-%-brokers %${KAFKA_BROKERS} [^\n]*/etc/kroute/routes\n"))
    assert.is_truthy(unit:match("\nEnvironmentFile=%-/etc/default/kroute\n"))
    assert.is_nil(unit:match("/usr/local"))
    assert.is_truthy(extract("./etc/default/kroute"):match("\nKAFKA_BROKERS=%S+"))
  end)

  it("has maintainer scripts that parse, are executable, and make and remove the kroute user", function()
    for _, s in ipairs { "postinst", "prerm", "postrm" } do
      local path = scratch .. "/DEBIAN/" .. s
      assert.equal(0, select(2, sh("test -x " .. q(path))), s .. " not executable")
      must("sh -n " .. q(path))
    end
    assert.is_truthy(must("cat " .. q(scratch .. "/DEBIAN/postinst")):match("adduser %-%-system"))
    assert.is_truthy(must("cat " .. q(scratch .. "/DEBIAN/postrm")):match("userdel kroute"))
  end)
end)

-- ---- the real thing: dpkg -i, run, dpkg --purge --------------------------

-- why the real install cannot run here, or nil when it can
local function cannot_install()
  if must("id -u") ~= "0\n" then return "not root" end
  if select(2, sh("test -f /etc/debian_version && command -v dpkg")) ~= 0 then return "not Debian" end
  local status = sh("dpkg-query -W -f='${Status}' kroute 2>/dev/null")
  if status ~= "" and not status:match("not%-installed") then return "a kroute package is installed already" end
  if select(2, sh("getent passwd kroute || getent group kroute")) == 0 then return "a kroute user or group exists already" end
  for _, p in ipairs { "/usr/bin/kroute", "/usr/share/kroute", "/usr/lib/kroute", "/etc/kroute", "/etc/default/kroute" } do
    if exists(p) then return p .. " exists already (make install PREFIX=/usr?)" end
  end
  for name in pairs(depends_names()) do
    if not sh("dpkg-query -W -f='${Status}' " .. name .. " 2>/dev/null"):match("install ok installed") then
      return "dependency " .. name .. " not installed"
    end
  end
end

-- dpkg, waiting while another apt or dpkg (another worker's make deps) holds the lock
local function dpkg(args)
  local out, rc
  for _ = 1, 60 do
    out, rc = sh("dpkg " .. args)
    if rc == 0 or not out:match("lock") then break end
    sh("sleep 1")
  end
  return out, rc
end

describe("the package installed with dpkg -i", function()
  local skip, installed
  local function real(name, fn)
    it(name, function()
      if skip then pending(name .. " [" .. skip .. "]") end
      assert(installed, "dpkg -i did not run")
      fn()
    end)
  end

  lazy_setup(function()
    skip = cannot_install()
    if skip then return end
    local out, rc = dpkg("-i " .. q(deb))
    assert(rc == 0, "dpkg -i failed:\n" .. out)
    installed = true
  end)

  -- whatever failed above, the machine is left without the package
  lazy_teardown(function()
    if not skip and select(2, sh("dpkg-query -W kroute")) == 0 then dpkg("--purge kroute") end
  end)

  real("is installed, and kroute --version prints the Makefile's version", function()
    assert.is_truthy(must("dpkg-query -W -f='${Status}' kroute"):match("install ok installed"))
    assert.equal("kroute " .. VERSION .. "\n", must("cd / && /usr/bin/kroute --version"))
  end)

  real("kroute check accepts the shipped routes/ and every example's route file", function()
    assert.is_truthy(must("cd / && env -u LUA_PATH -u LUA_CPATH /usr/bin/kroute check /usr/share/kroute/routes")
      :match("^ok: 3 route%(s%) in 1 file%(s%), every handler loaded"))
    for f in must("ls /usr/share/kroute/examples/*/routes.yaml"):gmatch("[^\n]+") do
      assert.is_truthy(must("cd / && /usr/bin/kroute check " .. q(f)):match("^ok: %d+ route"), f)
    end
  end)

  real("kroute check rejects a broken route file (it really checks)", function()
    local dir = scratch .. "/bad"
    must("mkdir -p " .. q(dir) .. " && printf 'routes:\\n  - name: x\\n    match: a\\n    handler: missing.lua\\n' > " .. q(dir .. "/r.yaml"))
    local out, rc = sh("cd / && /usr/bin/kroute check " .. q(dir))
    assert.equal(2, rc, out)
  end)

  real("created the kroute system user, who can run kroute check on the shipped routes", function()
    local pw = must("getent passwd kroute")
    local uid, shell = pw:match("^kroute:[^:]*:(%d+):%d+:[^:]*:[^:]*:([^\n]*)")
    assert.is_true(tonumber(uid) < 1000, "not a system user: " .. pw)
    assert.is_truthy(shell:match("nologin") or shell:match("false"), pw)
    assert.equal(0, select(2, sh("getent group kroute")))
    assert.is_truthy(must("cd / && runuser -u kroute -- /usr/bin/kroute check /usr/share/kroute/routes"):match("^ok: "))
  end)

  real("installed the unit with ExecReload, and systemd accepts it", function()
    local unit = must("cat /lib/systemd/system/kroute.service")
    assert.is_truthy(unit:match("\nExecReload=/bin/kill %-HUP %$MAINPID\n"))
    if select(2, sh("command -v systemd-analyze")) == 0 then
      local out, rc = sh("systemd-analyze verify /lib/systemd/system/kroute.service")
      assert.equal(0, rc, out)
      assert.is_nil(out:match("kroute.service"), out)
    end
  end)

  real("runs the shipped example specs with kroute test (Lua library and native module found)", function()
    if select(2, sh("command -v lua5.4 && command -v busted")) ~= 0 then pending("lua5.4 or busted missing") end
    local out, rc = sh("cd /usr/share/kroute && env -u LUA_PATH -u LUA_CPATH /usr/bin/kroute test examples/payments examples/welcome")
    assert.equal(0, rc, out)
    assert.is_truthy(out:match("(%d+) successes / 0 failures / 0 errors"), out)
    assert.is_true(tonumber(out:match("(%d+) successes")) >= 6, out)
  end)

  real("installed the man page and the bash completion", function()
    assert.is_truthy(must("zcat /usr/share/man/man1/kroute.1.gz"):match("\n%.SH SIGNALS\n"))
    if select(2, sh("command -v man")) == 0 then
      assert.equal("/usr/share/man/man1/kroute.1.gz\n", must("man -w kroute"))
    end
    must("bash -c '. /usr/share/bash-completion/completions/kroute && complete -p kroute'")
  end)

  real("dpkg --purge removes every file, the /etc files, and the kroute user and group", function()
    local out, rc = dpkg("--purge kroute")
    assert.equal(0, rc, out)
    assert.equal(1, select(2, sh("dpkg-query -W -f='${Status}' kroute | grep -q 'install ok installed'")))
    for path, e in pairs(entries) do
      if e.mode:sub(1, 1) ~= "d" then assert.is_false(exists(path:sub(2)), path .. " left behind") end
    end
    for _, d in ipairs { "/usr/share/kroute", "/usr/lib/kroute", "/etc/kroute", "/usr/share/doc/kroute" } do
      assert.is_false(exists(d), d .. " left behind")
    end
    assert.equal(2, select(2, sh("getent passwd kroute")))
    assert.equal(2, select(2, sh("getent group kroute")))
    assert.equal(2, select(2, sh("ls /var/lib/dpkg/info/kroute.* >/dev/null 2>&1 || exit 2")))
  end)
end)

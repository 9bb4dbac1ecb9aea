-- spec/support/scratch.lua - what the unit specs share for files and child
-- processes: a scratch folder under /tmp, writing a file into it, and
-- running a Lua script in a child process with the same native module (for
-- behaviour that may crash or hang the process).
local scratch = {}

local LUA = os.execute("command -v lua5.4 >/dev/null 2>&1") and "lua5.4" or "lua"

--- A new empty folder /tmp/kroute-NAME.XXXXXX (its real path).
function scratch.dir(name)
  local p = assert(io.popen(('cd "$(mktemp -d /tmp/kroute-%s.XXXXXX)" && pwd -P'):format(name)))
  local dir = p:read("l")
  p:close()
  return dir
end

function scratch.remove(dir)
  os.execute("rm -rf '" .. dir .. "'")
end

--- Writes `text` to dir/name; returns the path.
function scratch.write(dir, name, text)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

--- Runs `script` in a child Lua process; returns its output (stdout and
-- stderr) and exit code: 124 when it ran past `seconds` (default 5) and
-- was stopped. opts.vmem_kib caps its address space (ulimit -v).
function scratch.child(script, seconds, opts)
  opts = opts or {}
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(script)
  f:close()
  local limit = opts.vmem_kib and ("ulimit -v %d; "):format(opts.vmem_kib) or ""
  local cmd = ("%sLUA_CPATH='%s' timeout -s KILL %d %s %s 2>&1; echo \"EXIT $?\"")
              :format(limit, package.cpath, seconds or 5, LUA, path)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  os.remove(path)
  local code = tonumber(out:match("EXIT (%d+)\n?$"))
  out = out:gsub("EXIT %d+\n?$", "")
  if code == 137 then code = 124 end -- killed at the time limit
  return out, code
end

return scratch

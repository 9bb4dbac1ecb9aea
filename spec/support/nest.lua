-- spec/support/nest.lua - running the NestJS example apps (examples/nestjs)
-- from specs and benchmarks: install their npm packages, start an app with
-- its output in log files, read the JSON lines it prints.
local env = require "support.env"
local json = require("kroute.native").json

local nest = {dir = "examples/nestjs/"}

--- npm-installs the apps' packages into .build/nestjs (a no-op when current).
function nest.install()
  assert(os.execute("sh " .. nest.dir .. "install.sh"), "npm install of the NestJS packages failed")
end

--- Starts `node examples/nestjs/<script> args...`; stdout to log..".out",
-- stderr to log..".err". Returns the pid.
function nest.node(script, args, log)
  local argv = {"node", nest.dir .. script}
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return env.ts.spawn(argv, {stdout = log .. ".out", stderr = log .. ".err"})
end

--- The JSON objects an app printed, one per line, in order.
-- The topics examples/nestjs/client.js needs: every pattern it may send
-- (client.js PATTERNS) and its `.reply` topic, which ClientKafka must be
-- assigned before it sends. Real Kafka creates a missing one on first use,
-- too late for kafkajs's first metadata request.
function nest.client_topics(parts, reply_parts)
  local topics = {}
  for _, p in ipairs{"sum", "max", "echo", "fail", "slow", "mul"} do
    topics[#topics + 1] = p .. ":" .. parts
    topics[#topics + 1] = p .. ".reply:" .. reply_parts
  end
  return topics
end

function nest.json_lines(path)
  local out = {}
  for line in env.read(path):gmatch("[^\n]+") do
    if line:sub(1, 1) == "{" then out[#out + 1] = json.decode(line) end
  end
  return out
end

return nest

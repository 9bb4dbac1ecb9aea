-- --log-format json: every line is one JSON object; lines about a message
-- carry route, topic, partition and offset as fields.
local env = require "support.env"
local ts = env.ts
local json = require("kroute.native").json

describe("structured logs", function()
  it("writes one JSON object per line, with the message's coordinates as fields", function()
    local broker = env.broker{"log.in:1", "log.out:1"}
    local dir = env.tmpdir()
    env.write(dir .. "/r.yaml", env.fast_kafka .. [[
routes:
  - name: noisy
    match: log.in
    handler: noisy.lua
    to: log.out
    retry: { attempts: 1 }
]])
    env.write(dir .. "/noisy.lua", [[
local kroute = require "kroute"
return function(msg)
  kroute.log.warn("looking at", msg.value)
  if msg.value == "bad" then error("cannot route \"bad\"\nsecond line") end
  return msg.value
end
]])
    local r = env.kroute(dir, broker.addr, {args = {"--log-format", "json"}})
    assert.is_truthy(r:wait_log('"assigned 1 partition', 30000), r:logtext())
    ts.produce(broker.addr, "log.in", {{key = "a", value = "good"}, {key = "b", value = "bad"}})
    assert.equal(1, #env.consume(broker.addr, "log.in.dlq", 1, 15000))
    r:stop_clean()
    local lines, handler_line, failure = 0, nil, nil
    for line in r:logtext():gmatch("[^\n]+") do
      local obj = json.decode(line)
      assert.is_table(obj, "not JSON: " .. line)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", obj.ts)
      assert.is_string(obj.level)
      assert.is_string(obj.component)
      assert.is_string(obj.msg)
      lines = lines + 1
      if obj.component == "handler" and obj.msg:match("looking at good") then handler_line = obj end
      if obj.msg:match("^failed after 1 attempt") then failure = obj end
    end
    assert.is_true(lines > 5)
    assert.is_truthy(handler_line)
    assert.equal("warn", handler_line.level)
    assert.equal("noisy", handler_line.route)
    assert.equal("log.in", handler_line.topic)
    assert.equal(0, handler_line.partition)
    assert.equal(0, handler_line.offset)
    assert.is_truthy(failure, r:logtext())
    assert.equal(1, failure.offset)
    assert.matches('cannot route "bad"\nsecond line', failure.msg)
    r:cleanup()
    broker.stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

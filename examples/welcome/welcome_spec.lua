-- The welcome example without Kafka.
local testing = require "kroute.testing"

describe("welcome example", function()
  local welcome = assert(testing.route("examples/welcome/routes.yaml", "welcome"))

  it("requests a welcome email keyed by the user id", function()
    local res = welcome:run(testing.message{
      topic = "user.created", key = "u1",
      value = { id = "u1", name = "Minji", email = "minji@example.com" },
      headers = { ["x-correlation-id"] = "c-42" } })
    assert.is_true(res.ok, res.error)
    local out = res.records[1]
    assert.equal("notification.requested", out.topic)
    assert.equal("u1", out.key)
    assert.equal("c-42", out.header["x-correlation-id"])
    local n = out:json()
    assert.equal("email", n.channel)
    assert.equal("minji@example.com", n.to)
    assert.equal("Welcome to the concert hall, Minji!", n.subject)
    assert.is_true(n.requestedAt > 0)
  end)

  it("fails on a user without a valid email (retried, then dead-lettered)", function()
    local res = welcome:run(testing.message{ topic = "user.created", key = "u3",
                                             value = { id = "u3", name = "NoMail" } })
    assert.is_false(res.ok)
    assert.matches("user u3 has no valid email", res.error)
    assert.equal(0, #res.records)
  end)
end)

-- The payments example, handler by handler, without Kafka.
local testing = require "kroute.testing"

local function payment(fields)
  local ev = { eventId = "e-1", userId = "u1", paymentId = "p-1", seatId = "A-1",
               amount = 55000 }
  for k, v in pairs(fields or {}) do ev[k] = v end
  return testing.message{ topic = "payment.completed", key = ev.userId, value = ev }
end

describe("payments example: ranking", function()
  local ranking = assert(testing.route("examples/payments/routes.yaml", "ranking"))

  it("turns a payment into points for the same user key", function()
    local res = ranking:run(payment())
    assert.is_true(res.ok, res.error)
    assert.equal(1, #res.records)
    local out = res.records[1]
    assert.equal("ranking.points", out.topic)
    assert.equal("u1", out.key)
    assert.same({ eventId = "e-1", userId = "u1", paymentId = "p-1", points = 550 },
                out:json())
  end)

  it("filters out zero payments", function()
    local res = ranking:run(payment{ amount = 0 })
    assert.is_true(res.ok)
    assert.equal(0, #res.records)
  end)

  it("fails (so retries, then dead-letters) on a payment missing a field", function()
    local res = ranking:run(payment{ seatId = testing.json.null })
    assert.is_false(res.ok)
    assert.matches("bad payment: missing seatId", res.error)
    res = ranking:run(testing.message{ topic = "payment.completed", value = "{oops" })
    assert.is_false(res.ok)
    assert.matches("bad payment: bad JSON", res.error)
  end)
end)

describe("payments example: data platform", function()
  local archive = assert(testing.route("examples/payments/routes.yaml", "data-platform"))

  it("passes the payment through byte for byte with ingestion headers", function()
    local raw = '{"amount": 1200,  "userId":"u9"}'
    local res = archive:run(testing.message{ topic = "payment.completed", partition = 2,
                                             offset = 7, key = "u9", value = raw,
                                             headers = { trace = "t-1" } })
    assert.is_true(res.ok, res.error)
    local out = res.records[1]
    assert.equal("dataplatform.payments", out.topic)
    assert.equal(raw, out.value)
    assert.equal("u9", out.key)
    assert.equal("t-1", out.header.trace)
    assert.equal("payment.completed/2@7", out.header["x-source"])
    assert.matches("^%d+$", out.header["x-ingested-at"])
  end)
end)

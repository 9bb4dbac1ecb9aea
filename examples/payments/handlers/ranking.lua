-- Ranking: one point per 100 of payment amount, keyed by the user (the
-- input key, kept by default) so a user's points stay in order.
local kroute = require "kroute"

local REQUIRED = { "eventId", "userId", "paymentId", "seatId", "amount" }

return function(msg)
  local ev, err = msg:json()
  if not ev then error("bad payment: " .. err) end
  for _, field in ipairs(REQUIRED) do
    if ev[field] == nil or ev[field] == kroute.json.null then
      error("bad payment: missing " .. field)
    end
  end
  if type(ev.amount) ~= "number" or ev.amount <= 0 then
    return -- refunds and zero payments earn nothing: filtered out
  end
  kroute.log.info(("user %s earns %d points for seat %s"):format(
    ev.userId, ev.amount // 100, ev.seatId))
  return {
    eventId = ev.eventId,
    userId = ev.userId,
    paymentId = ev.paymentId,
    points = ev.amount // 100,
  }
end

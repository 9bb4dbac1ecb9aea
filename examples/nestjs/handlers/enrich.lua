-- An order enriched by asking a NestJS service: kroute.request yields this
-- handler until user.get answers (other partitions keep flowing meanwhile).
local kroute = require "kroute"

return function(msg)
  local order, err = msg:json()
  if not order then error("bad order: " .. err) end
  local user, rerr = kroute.request("user.get", { id = order.userId }, { timeout = 5000 })
  if not user then
    error("user.get failed for user " .. tostring(order.userId) .. ": " .. rerr)
  end
  kroute.emit("order.enriched", {
    orderId = order.id,
    amount = order.amount,
    user = { id = user.id, name = user.name, tier = user.tier },
  }, { key = tostring(order.userId) })
end

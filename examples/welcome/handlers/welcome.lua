-- user.created -> notification.requested (email channel).
local kroute = require "kroute"
local templates = require "templates"

return function(msg)
  local user, err = msg:json()
  if not user then error("bad user.created event: " .. err) end
  if type(user.email) ~= "string" or not user.email:find("@", 1, true) then
    error("user " .. tostring(user.id) .. " has no valid email")
  end
  local mail = templates.welcome(user)
  return kroute.record{
    key = user.id,
    value = {
      channel = "email",
      to = user.email,
      subject = mail.subject,
      body = mail.body,
      requestedAt = kroute.now(),
    },
    headers = { ["x-correlation-id"] = msg.headers["x-correlation-id"] or user.id },
  }
end

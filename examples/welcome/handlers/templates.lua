-- Notification templates for the welcome route.
local M = {}

function M.welcome(user)
  return {
    subject = "Welcome to the concert hall, " .. (user.name or "friend") .. "!",
    body = "Your account " .. user.id .. " is ready. Seats open at 10:00.",
  }
end

return M

return function(msg)
  local total = 0
  for _, n in ipairs(msg.data) do total = total + n end
  return total
end

local kroute = require "kroute"
return function(msg)
  local t = kroute.clock()
  local reply, err = kroute.request("sum", { 1, 2, 3 })
  return { ms = (kroute.clock() - t) * 1000, ok = reply == "6", err = err, at = kroute.now() }
end

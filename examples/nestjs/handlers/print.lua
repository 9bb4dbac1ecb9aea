-- client.emit('print', ...) is an event: handled, never answered.
local kroute = require "kroute"

return function(msg)
  kroute.log.info("print:", msg.value)
  return msg.value -- to `print.seen`, so the example can be checked end to end
end

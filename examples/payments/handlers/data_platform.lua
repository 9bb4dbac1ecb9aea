-- DataPlatform: archive every payment byte for byte (the original value is
-- passed through, not re-encoded) with an ingestion header added.
local kroute = require "kroute"

return function(msg)
  local headers = msg.headers
  headers["x-ingested-at"] = tostring(kroute.now())
  headers["x-source"] = msg.topic .. "/" .. msg.partition .. "@" .. msg.offset
  return kroute.record{ value = msg.value, headers = headers }
end

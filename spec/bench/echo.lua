-- Replies with what it was sent, as NestJS's math-service `echo` does.
return function(msg) return msg.data end

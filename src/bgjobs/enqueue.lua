-- bgjobs enqueue: a batch of messages onto one queue, then wake idle consumers.
--
-- Writes exactly what Dramatiq's dispatch.lua "enqueue" writes ($ns:$queue.msgs hash
-- and $ns:$queue list), in one call for the whole batch, then pushes up to
-- wake_cap tokens on $ns:$queue.wake, trimmed so the list never grows past wake_cap.
-- Delay queues get no tokens: their consumers keep Dramatiq's polling, which also
-- drives the release of due messages.
--
-- With a claim key (KEYS[2]) nothing is written unless that key was not set yet; it is then
-- set for claim_ttl_s in the same call (the scheduler's exactly-once ticks).
--
-- KEYS[1] = namespace, KEYS[2] = optional claim key
-- ARGV = queue_name, wake_cap, claim_ttl_s, id1, data1, id2, data2, ...
local ns = KEYS[1]
local queue = ARGV[1]
local cap = tonumber(ARGV[2])
local queue_key = ns .. ":" .. queue
local messages = queue_key .. ".msgs"

if KEYS[2] and not redis.call("set", KEYS[2], "1", "NX", "EX", tonumber(ARGV[3])) then
    return 0
end

local n = 0
for i = 4, #ARGV, 2 do
    redis.call("hset", messages, ARGV[i], ARGV[i + 1])
    redis.call("rpush", queue_key, ARGV[i])
    n = n + 1
end

if cap > 0 and string.sub(queue, -3) ~= ".DQ" then
    local wake = queue_key .. ".wake"
    for _ = 1, math.min(n, cap) do
        redis.call("lpush", wake, "1")
    end
    redis.call("ltrim", wake, 0, cap - 1)
end
return n

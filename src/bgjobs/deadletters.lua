-- bgjobs dead letters: move messages from $ns:$queue.XQ back onto $ns:$queue.
--
-- Each message leaves the dead-letter set, its reason and its index entries (letters.lua,
-- prepended) and joins the queue in
-- one step, so a crash or a second operator can neither lose it nor queue it twice:
-- a message no longer in the set (requeued, purged or expired meanwhile) is skipped.
--
-- KEYS[1] = namespace
-- ARGV = queue_name, wake_cap, old_id1, new_id1, data1, old_id2, new_id2, data2, ...
local ns = KEYS[1]
local queue = ARGV[1]
local cap = tonumber(ARGV[2])
local queue_key = ns .. ":" .. queue
local xq = queue_key .. ".XQ"

local n = 0
for i = 3, #ARGV, 3 do
    if letter_forget(xq, ARGV[i]) == 1 then
        redis.call("hset", queue_key .. ".msgs", ARGV[i + 1], ARGV[i + 2])
        redis.call("rpush", queue_key, ARGV[i + 1])
        n = n + 1
    end
end

if n > 0 and cap > 0 then
    local wake = queue_key .. ".wake"
    for _ = 1, math.min(n, cap) do
        redis.call("lpush", wake, "1")
    end
    redis.call("ltrim", wake, 0, cap - 1)
end
return n

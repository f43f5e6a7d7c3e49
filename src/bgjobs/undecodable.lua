-- bgjobs: dead-letter one fetched message that does not decode, found by its bytes.
--
-- A message's Redis id lives inside its own encoding, so a message that does not decode
-- is found by comparing its data with the few messages this consumer has fetched and not
-- acked ($ns:__acks__.$worker.$queue, at most the prefetch). It leaves the ack set and the
-- queue's hash and joins the dead letters with its raw bytes and the reason.
--
-- KEYS[1] = namespace
-- ARGV = queue, worker_id, data, now_ms, reason_json, max_dead_letters
-- Returns the Redis id it dead-lettered, or false when no fetched message has that data.
local ns = KEYS[1]
local queue, worker, data, now, reason = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local canonical = queue
if string.sub(queue, -3) == ".DQ" then
    canonical = string.sub(queue, 1, -4)
end
local acks = ns .. ":__acks__." .. worker .. "." .. queue
local messages = ns .. ":" .. queue .. ".msgs"
local xq = ns .. ":" .. canonical .. ".XQ"
for _, id in ipairs(redis.call("smembers", acks)) do
    if redis.call("hget", messages, id) == data then
        redis.call("srem", acks, id)
        redis.call("hdel", messages, id)
        redis.call("zadd", xq, now, id)
        redis.call("hset", xq .. ".msgs", id, data)
        redis.call("hset", xq .. ".reasons", id, reason)
        letter_index(xq, id, id, "?", "undecodable", now)
        letters_cap(xq, tonumber(ARGV[6] or "0"))
        return id
    end
end
return false

-- bgjobs maintenance: heartbeat, recover dead workers' messages, poison guard, DLQ expiry.
--
-- Runs every few seconds from each worker process instead of Dramatiq's random
-- 1-in-1000 pass. Key layout is Dramatiq's (see its dispatch.lua):
--   $ns:__heartbeats__               zset worker_id -> last heartbeat (ms)
--   $ns:__acks__.$worker.$queue      set of fetched, unacked message ids
--   $ns:$queue / $ns:$queue.msgs     list of ids / hash id -> message
--   $ns:$queue.XQ / .XQ.msgs         dead letters (zset by time / hash)
-- and bgjobs's own:
--   $ns:$queue.XQ.reasons            hash id -> JSON reason for the dead letter
--   $ns:$queue.XQ.meta, .ids, .by:*  the dead letters' index (letters.lua, prepended)
--   $ns:__bgjobs_deliveries__        hash "$queue|$id" -> times delivered without finishing
--   $ns:__bgjobs_workers__           hash worker_id -> JSON description for `bgjobs status`
--   $ns:$queue.redelivered           set of ids put back after a worker took them (consumer.py's
--                                    fetch tells the worker, which checks a per-key slot again)
--
-- KEYS[1] = namespace
-- ARGV = now_ms, heartbeat_timeout_ms, dead_message_ttl_ms, max_deliveries, own_worker_id, wake_cap,
--        max_dead_letters, queue...
local ns = KEYS[1]
local now = tonumber(ARGV[1])
local heartbeat_timeout = tonumber(ARGV[2])
local dead_message_ttl = tonumber(ARGV[3])
local max_deliveries = tonumber(ARGV[4])
local own_id = ARGV[5]
local wake_cap = tonumber(ARGV[6])
local max_dead_letters = tonumber(ARGV[7])
local FIRST_QUEUE = 8

local heartbeats = ns .. ":__heartbeats__"
local deliveries = ns .. ":__bgjobs_deliveries__"
if own_id ~= "" then
    redis.call("zadd", heartbeats, now, own_id)
end

local function canonical(queue)
    if string.sub(queue, -3) == ".DQ" then
        return string.sub(queue, 1, -4)
    end
    return queue
end

local recovered, dead_lettered, expired = 0, 0, 0
local dead_workers = redis.call("zrangebyscore", heartbeats, 0, now - heartbeat_timeout)
for _, worker in ipairs(dead_workers) do
    local prefix = ns .. ":__acks__." .. worker .. "."
    for i = FIRST_QUEUE, #ARGV do
        local queue = ARGV[i]
        local acks = prefix .. queue
        local queue_key = ns .. ":" .. queue
        local messages = queue_key .. ".msgs"
        for _, id in ipairs(redis.call("smembers", acks)) do
            if redis.call("hexists", messages, id) == 1 then
                local field = queue .. "|" .. id
                local n = redis.call("hincrby", deliveries, field, 1)
                if n >= max_deliveries then
                    local xq = ns .. ":" .. canonical(queue) .. ".XQ"
                    redis.call("zadd", xq, now, id)
                    redis.call("hset", xq .. ".msgs", id, redis.call("hget", messages, id))
                    redis.call("hdel", messages, id)
                    redis.call("hset", xq .. ".reasons", id, cjson.encode({
                        kind = "poison",
                        reason = "ran " .. n .. " times without finishing (its worker died each time); not handed out again, as BGJOBS_WORKER__MAX_DELIVERIES is " .. max_deliveries,
                        failed_at = now,
                        deliveries = n,
                    }))
                    local message_id, actor = letter_identity(redis.call("hget", xq .. ".msgs", id))
                    letter_index(xq, id, message_id or id, actor or "?", "poison", now)
                    letters_cap(xq, max_dead_letters)
                    redis.call("hdel", deliveries, field)
                    dead_lettered = dead_lettered + 1
                else
                    redis.call("rpush", queue_key, id)
                    redis.call("sadd", queue_key .. ".redelivered", id)
                    if canonical(queue) == queue then
                        redis.call("lpush", queue_key .. ".wake", "1")
                        redis.call("ltrim", queue_key .. ".wake", 0, wake_cap - 1)
                    end
                    recovered = recovered + 1
                end
            end
        end
        redis.call("del", acks)
    end
    if next(redis.call("keys", prefix .. "*")) == nil then
        redis.call("zrem", heartbeats, worker)
        redis.call("hdel", ns .. ":__bgjobs_workers__", worker)
    end
end

-- Forget delivery counts of messages that have since finished.
local counted = redis.call("hkeys", deliveries)
for _, field in ipairs(counted) do
    local sep = string.find(field, "|", 1, true)
    local queue, id = string.sub(field, 1, sep - 1), string.sub(field, sep + 1)
    if redis.call("hexists", ns .. ":" .. queue .. ".msgs", id) == 0 then
        redis.call("hdel", deliveries, field)
    end
end

-- Forget marks of put-back messages deleted before anyone fetched them.
for i = FIRST_QUEUE, #ARGV do
    local queue_key = ns .. ":" .. ARGV[i]
    if redis.call("scard", queue_key .. ".redelivered") > 0 then
        for _, id in ipairs(redis.call("smembers", queue_key .. ".redelivered")) do
            if redis.call("hexists", queue_key .. ".msgs", id) == 0 then
                redis.call("srem", queue_key .. ".redelivered", id)
            end
        end
    end
end

-- Expire old dead letters with their reasons and index entries, as Dramatiq's maintenance does.
for i = FIRST_QUEUE, #ARGV do
    local queue = ARGV[i]
    if canonical(queue) == queue then
        expired = expired + letters_expire(ns .. ":" .. queue .. ".XQ", now - dead_message_ttl + 1, 1000)
    end
end

return {recovered, dead_lettered, expired}

-- bgjobs dead letters: the index beside a queue's dead letters, shared by every script that
-- adds or removes one (prepended to them), so no path leaves the index out of step.
--
-- For the dead letters of a queue, <xq> = <ns>:<queue>.XQ (a sorted set of Redis ids by failure
-- time) with <xq>.msgs and <xq>.reasons, the index is:
--   <xq>.meta              hash redis id -> "message id<TAB>actor<TAB>kind"
--   <xq>.ids               hash message id -> redis id        (lookup by the id send() returned)
--   <xq>.by:actor:<actor>  sorted set of redis ids by failure time
--   <xq>.by:kind:<kind>    sorted set of redis ids by failure time
--   <xq>.indexed           "1" once every letter of the queue is in the index

local function letter_index(xq, id, message_id, actor, kind, at)
    if redis.call("exists", xq .. ".indexed") == 0 then
        local n = redis.call("zcard", xq)
        if n == 0 or (n == 1 and redis.call("zscore", xq, id)) then
            redis.call("set", xq .. ".indexed", "1") -- nothing older than the index to miss
        end
    end
    redis.call("hset", xq .. ".meta", id, message_id .. "\t" .. actor .. "\t" .. kind)
    redis.call("hset", xq .. ".ids", message_id, id)
    redis.call("zadd", xq .. ".by:actor:" .. actor, at, id)
    redis.call("zadd", xq .. ".by:kind:" .. kind, at, id)
end

-- Remove letter <id> and its index entries; 1 if it was a letter.
local function letter_forget(xq, id)
    local removed = redis.call("zrem", xq, id)
    redis.call("hdel", xq .. ".msgs", id)
    redis.call("hdel", xq .. ".reasons", id)
    local meta = redis.call("hget", xq .. ".meta", id)
    if meta then
        local first = string.find(meta, "\t", 1, true)
        local second = string.find(meta, "\t", first + 1, true)
        local message_id = string.sub(meta, 1, first - 1)
        redis.call("hdel", xq .. ".meta", id)
        if redis.call("hget", xq .. ".ids", message_id) == id then
            redis.call("hdel", xq .. ".ids", message_id)
        end
        redis.call("zrem", xq .. ".by:actor:" .. string.sub(meta, first + 1, second - 1), id)
        redis.call("zrem", xq .. ".by:kind:" .. string.sub(meta, second + 1), id)
    end
    return removed
end

-- Keep at most <cap> letters in the queue (0: no cap), dropping the oldest; how many went.
local function letters_cap(xq, cap)
    local n, dropped = redis.call("zcard", xq), 0
    if cap > 0 and n > cap then
        for _, id in ipairs(redis.call("zrange", xq, 0, n - cap - 1)) do
            dropped = dropped + letter_forget(xq, id)
        end
    end
    return dropped
end

-- Remove letters failed before <cutoff> (ms), at most <limit>; how many.
local function letters_expire(xq, cutoff, limit)
    local old = redis.call("zrangebyscore", xq, "-inf", "(" .. cutoff, "LIMIT", 0, limit)
    for _, id in ipairs(old) do
        letter_forget(xq, id)
    end
    return #old
end

-- The message id and actor of a message's JSON (nil, nil when it does not decode).
local function letter_identity(data)
    local ok, message = pcall(cjson.decode, data)
    if ok and type(message) == "table" then
        return tostring(message["message_id"] or ""), tostring(message["actor_name"] or "?")
    end
    return nil, nil
end

-- bgjobs batches: count each job of a batch once, and enqueue its callbacks once, in one call.
--
-- A batch is a hash <prefix><id> (state, total, succeeded, failed, cancelled, the callbacks'
-- queue/id/data, parent and parent_index) and two bitmaps, <prefix><id>:done (a job's outcome
-- was counted) and <prefix><id>:failed (it was counted as failed): one bit per job, by the index
-- the job was sent with. A job whose outcome is counted again (a redelivery, a second run) finds
-- its bit set and changes nothing; a dead-lettered job that is requeued and then succeeds moves
-- from failed to succeeded.
--
-- Once every job is counted and the batch is closed (the block that made it has ended), the
-- callbacks are written onto their queues in this same call, as the enqueue script writes a
-- message: on_complete once, on_success once every job has succeeded (later too, when a requeued
-- job makes it so). A child batch is one job of its parent: its completion counts there.
--
-- With a RabbitMQ broker (mode "due") the callbacks cannot be written onto its queues from here:
-- they are pushed, in this same call, onto the list <prefix>due, which a worker relays.
--
-- KEYS[1] = the broker's namespace (the queues)
-- ARGV = prefix, wake_cap, now, keep_s, mode, op, id, index_or_count, outcome
--   op "settle": count job <index> of <id> as <outcome> (succeeded, failed, cancelled)
--   op "close":  add <count> jobs to <id>'s total, mark it running, and complete it if done
-- Returns 1 when it counted (settle) or closed, 0 when not; plus 2 when it pushed a callback.
local ns = KEYS[1]
local prefix, cap, now, keep, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5]
local pushed = 0

local function enqueue(queue, id, data)
    local queue_key = ns .. ":" .. queue
    redis.call("hset", queue_key .. ".msgs", id, data)
    redis.call("rpush", queue_key, id)
    if cap > 0 and string.sub(queue, -3) ~= ".DQ" then
        redis.call("lpush", queue_key .. ".wake", "1")
        redis.call("ltrim", queue_key .. ".wake", 0, cap - 1)
    end
end

local settle

local function callback(key, kind)
    local found = redis.call("hmget", key, kind .. "_queue", kind .. "_id", kind .. "_data", kind .. "_sent")
    if found[4] == "1" then
        return
    end
    redis.call("hset", key, kind .. "_sent", "1")
    if found[1] and mode == "due" then
        redis.call("rpush", prefix .. "due", found[3])
        pushed = 2
    elseif found[1] then
        enqueue(found[1], found[2], found[3])
    end
end

local function finish(id)
    local key = prefix .. id
    local b = redis.call("hmget", key, "state", "total", "succeeded", "failed", "cancelled", "parent", "parent_index")
    if b[1] ~= "running" and b[1] ~= "done" then
        return -- still open (its block has not ended), or gone
    end
    local total, ok = tonumber(b[2]), tonumber(b[3])
    if ok + tonumber(b[4]) + tonumber(b[5]) < total then
        return
    end
    if b[1] == "running" then
        redis.call("hset", key, "state", "done", "finished_at", now)
        for _, k in ipairs({key, key .. ":done", key .. ":failed"}) do
            redis.call("expire", k, keep)
        end
    end
    callback(key, "complete")
    if ok == total then
        callback(key, "success")
    end
    if b[6] and b[6] ~= "" then
        settle(b[6], tonumber(b[7]), ok == total and "succeeded" or "failed")
    end
end

settle = function(id, index, outcome)
    local key = prefix .. id
    if redis.call("exists", key) == 0 then
        return 0
    end
    local done, failed = key .. ":done", key .. ":failed"
    if outcome == "succeeded" then
        if redis.call("setbit", done, index, 1) == 0 then
            redis.call("hincrby", key, "succeeded", 1)
        elseif redis.call("getbit", failed, index) == 1 then
            redis.call("setbit", failed, index, 0)
            redis.call("hincrby", key, "failed", -1)
            redis.call("hincrby", key, "succeeded", 1)
        else
            return 0
        end
    elseif redis.call("setbit", done, index, 1) == 0 then
        if outcome == "failed" then
            redis.call("setbit", failed, index, 1)
        end
        redis.call("hincrby", key, outcome, 1)
    else
        return 0
    end
    finish(id)
    return 1
end

local op, id = ARGV[6], ARGV[7]
if op == "settle" then
    return settle(id, tonumber(ARGV[8]), ARGV[9]) + pushed
end
local key = prefix .. id
if redis.call("exists", key) == 0 then
    return 0
end
redis.call("hincrby", key, "total", tonumber(ARGV[8]))
if redis.call("hget", key, "state") == "open" then
    redis.call("hset", key, "state", "running")
end
finish(id)
return 1 + pushed

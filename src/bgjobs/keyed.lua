-- bgjobs per-key limits (keyed_store.py): each (actor, key) has slots (a sorted set of the message
-- ids holding one, by lease deadline), a turn (the rate's next start, as in the generic cell rate
-- algorithm) and a lane (message ids waiting, oldest first). Every waiting message is stored in one
-- hash as "actor \31 key \31 queue \31 redis id \31 encoded message".
--
-- On the Redis broker (ARGV[4] is its namespace) a job leaving its lane is written onto its queue
-- here, as enqueue.lua writes it, in the same call that gave it its slot. Elsewhere (RabbitMQ, the
-- stub) it is returned to be published, and marked "pumping" until the caller confirms it.
--
-- ARGV[1] = key prefix, ARGV[2] = now (ms), ARGV[3] = slot lease (ms), ARGV[4] = the broker's
-- namespace or '', ARGV[5] = wake cap, ARGV[6] = how many ids were published since they were
-- pumped, then those ids, then the script's own arguments.
local SEP = '\31'
local base, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ns, wake_cap = ARGV[4], tonumber(ARGV[5])
local msgs, pumping, due = base .. 'msgs', base .. 'pumping', base .. 'due'
-- The jobs running on a live worker, by message id, until when (renewed while they run): a copy
-- of one (RabbitMQ hands a message out again when its worker's connection drops, not only when the
-- worker dies) holds the same slot, and waits in its lane until the first run has ended.
local running = base .. 'running'

local function limits(actor, key)
  local limit, interval, burst = -1, 0, 1
  local declared = redis.call('HGET', base .. 'declared', actor)
  if declared then
    local a, b, c = string.match(declared, '^(%S+) (%S+) (%S+)$')
    limit, interval, burst = tonumber(a), tonumber(b), tonumber(c)
  end
  local own = actor .. SEP .. key .. SEP
  local o = redis.call('HMGET', base .. 'limits', actor .. SEP .. 'limit', own .. 'limit', actor .. SEP .. 'interval',
                       own .. 'interval', actor .. SEP .. 'burst', own .. 'burst')
  if o[2] then limit = tonumber(o[2]) elseif o[1] then limit = tonumber(o[1]) end
  if o[4] then interval = tonumber(o[4]) elseif o[3] then interval = tonumber(o[3]) end
  if o[6] then burst = tonumber(o[6]) elseif o[5] then burst = tonumber(o[5]) end
  return limit, interval, burst
end

-- Given the key's limits (read once per call by limits() above), 0: the id holds a slot and its
-- turn; -1: every slot is held; n > 0: its turn (or the end of an earlier run of the same id, on a
-- live worker) is n ms away.
local function take(actor, key, id, limit, interval, burst)
  local kb = base .. actor .. SEP .. key
  local slots = kb .. SEP .. 'slots'
  if limit >= 0 then
    if redis.call('ZSCORE', slots, id) then
      local until_ = tonumber(redis.call('ZSCORE', running, id) or '0')
      if until_ > now then return math.ceil(until_ - now) end
      return 0
    end
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    if redis.call('ZCARD', slots) >= limit then return -1 end
  end
  if interval > 0 then
    local turn = kb .. SEP .. 'turn'
    local tat = math.max(tonumber(redis.call('GET', turn) or '0'), now)
    local allowed = tat - (burst - 1) * interval
    if allowed > now then return math.ceil(allowed - now) end
    redis.call('SET', turn, string.format('%.3f', tat + interval), 'PX', math.ceil(tat + interval - now) + 1000)
  end
  if limit >= 0 then
    redis.call('ZADD', slots, now + lease, id)
    redis.call('PEXPIRE', slots, lease)
    redis.call('SADD', base .. actor .. SEP .. 'busy', key)
  end
  return 0
end

-- Moves the lane's head to `out` while it can take a slot and its turn; else marks when to look again.
local function pump(actor, key, out)
  local kb = base .. actor .. SEP .. key
  local lane = kb .. SEP .. 'lane'
  local limit, interval, burst
  while true do
    local id = redis.call('LINDEX', lane, 0)
    if not id then
      redis.call('SREM', base .. actor .. SEP .. 'waiting', key)
      return
    end
    if not limit then limit, interval, burst = limits(actor, key) end
    local v = take(actor, key, id, limit, interval, burst)
    if v ~= 0 then
      local at = now + v
      if v < 0 then
        local first = redis.call('ZRANGE', kb .. SEP .. 'slots', 0, 0, 'WITHSCORES')
        at = first[2] and tonumber(first[2]) or nil
      end
      if at then redis.call('ZADD', due, at, actor .. SEP .. key) end
      return
    end
    redis.call('LPOP', lane)
    local entry = redis.call('HGET', msgs, id)
    if entry and ns ~= '' then
      local queue, rid, data = string.match(entry, '^[^\31]*\31[^\31]*\31([^\31]*)\31([^\31]*)\31(.*)$')
      local queue_key = ns .. ':' .. queue
      redis.call('HSET', queue_key .. '.msgs', rid, data)
      redis.call('RPUSH', queue_key, rid)
      redis.call('LPUSH', queue_key .. '.wake', '1')
      redis.call('LTRIM', queue_key .. '.wake', 0, wake_cap - 1)
      redis.call('HDEL', msgs, id)
    elseif entry then
      redis.call('ZADD', pumping, now, id)
      out[#out + 1] = entry
    end
  end
end

local n = tonumber(ARGV[6])
for i = 7, 6 + n do
  redis.call('ZREM', pumping, ARGV[i])
  redis.call('HDEL', msgs, ARGV[i])
end
local first = 7 + n

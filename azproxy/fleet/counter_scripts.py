"""The Lua scripts of the per-key limits' counters (counters.py says what
each key holds): admission, settlement, leases given back and renewed.
windows.py has the same arithmetic for the counters of one process."""

from __future__ import annotations

from azproxy.fleet.scripts import Script

__all__ = ["ADMIT", "ADMIT_ARGUMENTS", "CHARGE", "RELEASE", "RENEW"]

# KEYS: rate, leases, quota. ARGV: rpm, tpm, max_concurrent, token_quota (0:
# none), the quota key's expiry (a timestamp), the wait at max_concurrent,
# the lease's TTL in seconds, then what changes per request (last, so that
# the rest is packed once per key: coalesce.py): the estimate, the lease id.
# Returns the refusing limit (0: admitted; 1 rpm, 2 tpm, 3 concurrency, 4
# quota), the wait as a string (Lua numbers become integers in a reply), then
# what is left of rpm, tpm and the quota (-1: no such limit).
ADMIT = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local maxc, quota = tonumber(ARGV[3]), tonumber(ARGV[4])
local est = tonumber(ARGV[8])
local tats = redis.call('HMGET', KEYS[1], 'r', 't')
local rtat = math.max(tonumber(tats[1]) or 0, now)
local ttat = math.max(tonumber(tats[2]) or 0, now)
local used = 0
if quota > 0 then used = tonumber(redis.call('GET', KEYS[3]) or '0') end
local function left(tat, limit)
  if limit == 0 then return -1 end
  local room = now + 60 + 0.000001 - tat
  if room <= 0 then return 0 end
  return math.floor(room / (60 / limit))
end
local function answer(kind, wait)
  local q = -1
  if quota > 0 then q = math.max(quota - used, 0) end
  return {kind, string.format('%.6f', wait), left(rtat, rpm), left(ttat, tpm), q}
end
local function late(tat, cost, limit)
  if cost > limit then cost = limit end
  local l = tat + cost * (60 / limit) - now - 60
  if l > 0.000001 then return l end
  return 0
end
if quota > 0 and not (used < quota and used + est <= quota) then
  return answer(4, 0)
end
local kind, wait = 1, 0
if rpm > 0 then wait = late(rtat, 1, rpm) end
if tpm > 0 then
  local w = late(ttat, est, tpm)
  if w > wait then kind, wait = 2, w end
end
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local busy = tonumber(ARGV[6])
  if redis.call('ZCARD', KEYS[2]) >= maxc and wait < busy then
    kind, wait = 3, busy
  end
end
if wait > 0 then return answer(kind, wait) end
if rpm > 0 then rtat = rtat + 60 / rpm end
if tpm > 0 then ttat = ttat + est * (60 / tpm) end
if rpm > 0 or tpm > 0 then
  redis.call('HSET', KEYS[1], 'r', string.format('%.6f', rtat),
             't', string.format('%.6f', ttat))
  redis.call('EXPIRE', KEYS[1], math.ceil(math.max(rtat, ttat) - now) + 60)
end
if quota > 0 then
  used = redis.call('INCRBY', KEYS[3], est)
  redis.call('EXPIREAT', KEYS[3], ARGV[5])
end
if maxc > 0 then
  local ttl = tonumber(ARGV[7])
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[9])
  redis.call('EXPIRE', KEYS[2], math.ceil(ttl) + 1)
end
return answer(0, 0)
"""
)

# KEYS: rate, quota. ARGV: tokens (fewer when negative), tpm, requests, rpm,
# the quota key's expiry (0: the period is over, or no quota), and 1 for usage
# made while Redis was away (counted from now, as the key's counters in
# this process did; 0: a settlement, adjusting what admission counted).
CHARGE = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local requests, rpm = tonumber(ARGV[3]), tonumber(ARGV[4])
local expiry, back = tonumber(ARGV[5]), ARGV[6] == '1'
local last = 0
local function add(field, units, limit)
  local tat = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  if back then tat = math.max(tat, now) end
  tat = tat + units * (60 / limit)
  redis.call('HSET', KEYS[1], field, string.format('%.6f', tat))
  last = math.max(last, tat)
end
if tpm > 0 and tokens ~= 0 then add('t', tokens, tpm) end
if rpm > 0 and requests > 0 then add('r', requests, rpm) end
if last > now and redis.call('TTL', KEYS[1]) < last - now + 60 then
  redis.call('EXPIRE', KEYS[1], math.ceil(last - now) + 60)
end
if expiry > 0 and tokens ~= 0 then
  if back or redis.call('EXISTS', KEYS[2]) == 1 then
    if redis.call('INCRBY', KEYS[2], tokens) < 0 then
      redis.call('SET', KEYS[2], 0)
    end
    redis.call('EXPIREAT', KEYS[2], expiry)
  end
end
return 1
"""
)

# KEYS: leases. ARGV: the lease ids to give back.
RELEASE = Script("return redis.call('ZREM', KEYS[1], unpack(ARGV))")

# KEYS: leases. ARGV: the TTL in seconds, then the lease ids to keep: each
# expires a TTL from now (if it did not already).
RENEW = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
return 1
"""
)

# EVALSHA, the SHA-1, the number of keys, 3 keys and 9 arguments.
ADMIT_ARGUMENTS = 15

package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authgate/authgate/idp"
)

// The throttle's scripts keep the memory throttle's rules (idp/throttle.go),
// line for line, on a hash per key: f failures, l the last failure, u no
// attempt before. Times are Unix microseconds: exact in a Lua number (a
// double), where nanoseconds would not be.
//
// Time is the caller's now, not the server's TIME: the rules are then the
// memory throttle's to the microsecond, tests drive both with one clock,
// and the provider's clock (Config.Now) means the same for either store.
// Nodes' clocks differ by milliseconds where the waits are seconds to
// hours; a node behind by d sees a wait as d longer, which errs on the
// safe side, and forgiveness can never go negative (a failure "in the
// future" forgives nothing). The server's clock only bounds a key's life:
// each key expires, relative to the server, once it delays no one and every
// failure in it is forgiven, which is when the memory throttle would prune
// it; an entry found in that state behaves as an absent one.

// throttleWait is ThrottleLimit.Wait in Lua: ARGV holds free, base and max
// of key i at 3i-1, 3i and 3i+1 (ARGV[1] is now).
const throttleWait = `
local function wait(f, i)
  local free, base, max = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  local n = f - free
  if n <= 0 then return 0 end
  if n > 30 then return max end
  return math.min(base * 2^(n-1), max)
end
`

// reserveScript is ThrottleStore.Reserve: the longest wait of any key, or
// one failure counted against every key.
var reserveScript = redis.NewScript(throttleWait + `
local now = tonumber(ARGV[1])
local longest = 0
for i, k in ipairs(KEYS) do
  local u = tonumber(redis.call('HGET', k, 'u')) or 0
  if u - now > longest then longest = u - now end
end
if longest > 0 then return longest end
for i, k in ipairs(KEYS) do
  local max = tonumber(ARGV[3*i+1])
  local e = redis.call('HMGET', k, 'f', 'l', 'u')
  local f, l, u = tonumber(e[1]) or 0, tonumber(e[2]) or 0, tonumber(e[3]) or 0
  if f > 0 and max > 0 then -- forgive one failure per max since the last
    local n = math.floor((now - l) / max)
    if n >= f then f = 0 elseif n > 0 then f = f - n; l = l + n * max end
  end
  f = f + 1
  -- pl and pu: the last failure and the wait before this attempt, which a
  -- Release of it puts back.
  local pl, pu = l, u
  local w = wait(f, i)
  if w > 0 then u = now + w end
  redis.call('HSET', k, 'f', f, 'l', now, 'u', u, 'pl', pl, 'pu', pu)
  -- Alive while it delays anyone or holds a failure not yet forgiven.
  local life = math.max(u - now, f * max, 1000)
  redis.call('PEXPIRE', k, math.ceil(life / 1000))
end
return 0
`)

// releaseScript is ThrottleStore.Release of an attempt counted at
// ARGV[1]: one failure fewer for every key that has a count, and the key
// as if the attempt had not been made. When it was the latest counted, its
// last failure and wait go back to what they were before it; when others
// were counted since, the latest of them sets the wait that the count
// comes to without it. No wait is left if that brings the count within
// Free. The key keeps its time to live, long enough for the count it had.
var releaseScript = redis.NewScript(throttleWait + `
local at = tonumber(ARGV[1])
for i, k in ipairs(KEYS) do
  local e = redis.call('HMGET', k, 'f', 'l', 'pl', 'pu')
  local f = tonumber(e[1])
  if f and f > 0 then
    f = f - 1
    local l, u = tonumber(e[2]) or 0, 0
    if l == at then
      l, u = tonumber(e[3]) or 0, tonumber(e[4]) or 0
    else
      u = l + wait(f, i)
    end
    if wait(f, i) == 0 then u = 0 end
    redis.call('HSET', k, 'f', f, 'l', l, 'u', u)
  end
end
return 0
`)

// throttleKeys returns the Redis keys and the script arguments of keys.
func (s *Store) throttleKeys(now time.Time, keys []idp.ThrottleKey) ([]string, []any) {
	rkeys := make([]string, len(keys))
	args := make([]any, 1, 1+3*len(keys))
	args[0] = now.UnixMicro()
	for i, k := range keys {
		rkeys[i] = s.throttleKey(k.Key)
		args = append(args, k.Limit.Free, k.Limit.Base.Microseconds(), k.Limit.Max.Microseconds())
	}
	return rkeys, args
}

func (s *Store) throttleKey(key string) string { return s.prefix + "{throttle}:" + key }

// Reserve implements [idp.ThrottleStore], in one script: Redis runs a
// script alone, so the check and the count are one step for every process
// that shares the server.
func (s *Store) Reserve(ctx context.Context, now time.Time, keys []idp.ThrottleKey) (time.Duration, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	rkeys, args := s.throttleKeys(now, keys)
	// EVALSHA, and EVAL when the server does not have the script yet.
	w, err := reserveScript.Run(ctx, s.client, rkeys, args...).Int64()
	if err != nil {
		return 0, fmt.Errorf("redisstore: throttle reserve: %w", err)
	}
	return time.Duration(w) * time.Microsecond, nil
}

// Release implements [idp.ThrottleStore].
func (s *Store) Release(ctx context.Context, at time.Time, keys []idp.ThrottleKey) error {
	if len(keys) == 0 {
		return nil
	}
	rkeys, args := s.throttleKeys(at, keys)
	if err := releaseScript.Run(ctx, s.client, rkeys, args...).Err(); err != nil {
		return fmt.Errorf("redisstore: throttle release: %w", err)
	}
	return nil
}

// Forget implements [idp.ThrottleStore] with one DEL of every key, atomic
// like a script and no more costly; the keys share a Cluster slot.
func (s *Store) Forget(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	rkeys := make([]string, len(keys))
	for i, k := range keys {
		rkeys[i] = s.throttleKey(k)
	}
	if err := s.client.Del(ctx, rkeys...).Err(); err != nil {
		return fmt.Errorf("redisstore: throttle forget: %w", err)
	}
	return nil
}

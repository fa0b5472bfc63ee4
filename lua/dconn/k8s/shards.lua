-- dconn.k8s.shards: sharded leadership, so that N agents split the targets between them and each
-- target is decided by exactly one agent at a time.
--
--   local set = shards.new(client, {name=, namespace=, identity=, shards=16, lease_duration=15,
--                                   renew_deadline=10, retry_period=2})
--   set:step()            one round: renew our membership, list the set's Leases, take the
--                         shards assigned to us, give back the others. Returns the shards we hold.
--   set:owns(key) -> bool  whether we hold the shard of `key` (a target's name) right now
--   set:shard_of(key) -> i (1-based)      set:held() -> {i, ...}      set:members() -> {identity, ...}
--   set:run([should_stop])  step() every retry_period until should_stop() or set:stop()
--   set:release()           give back every shard and the membership (a clean shutdown)
--
-- Kubernetes does the coordination: one Lease per shard (`<name>-shard-<i>`), acquired and renewed
-- with dconn.k8s.leader's rules, so two agents never hold the same shard whatever they believe
-- about each other; and one Lease per agent (`<name>-member-<hash of identity>`) that says it is
-- alive. Shards are assigned by rendezvous hashing over the live members (each shard goes to the
-- member with the highest hash of member and shard), so a member joining or leaving moves only
-- its own share. A member is live while its Lease changes; as in leader, expiry is judged on our
-- own clock, from when we last saw the record change. Every shard Lease is observed at each
-- step, so the shards of a member that died are taken over one lease duration after its last
-- renewal (plus a retry period), not two.
local leader = require "dconn.k8s.leader"
local log = require "dconn.log"
local timer = require "dconn.timer"
local options = require "dconn._options"

local type, ipairs, pairs, tonumber, tostring, error = type, ipairs, pairs, tonumber, tostring, error
local setmetatable = setmetatable
local format, byte, sort, concat = string.format, string.byte, table.sort, table.concat
local now, sleep, random = timer.now, timer.sleep, math.random

local _M = { _VERSION = "0.1.0" }

local SET_LABEL, ROLE_LABEL = "dconn.io/shard-set", "dconn.io/shard-role"
local MAX_SHARDS = 1024

_M.OPTIONS = {
  name = "string",
  namespace = "string",
  identity = "string",
  shards = "number",
  lease_duration = "number",
  renew_deadline = "number",
  retry_period = "number",
}

-- FNV-1a, 32 bits, then MurmurHash3's finalizer: a stable hash, the same in every agent. FNV alone
-- mixes too little for rendezvous hashing (names that differ in one letter rank alike).
local function fnv(s)
  local h = 2166136261
  for i = 1, #s do
    h = ((h ~ byte(s, i)) * 16777619) & 0xffffffff
  end
  h = ((h ~ (h >> 16)) * 0x85ebca6b) & 0xffffffff
  h = ((h ~ (h >> 13)) * 0xc2b2ae35) & 0xffffffff
  return h ~ (h >> 16)
end
_M.hash = fnv

local ShardSet = {}
ShardSet.__index = ShardSet

function _M.new(client, opts)
  if type(client) ~= "table" then error("k8s_shards.new: expected a dconn.k8s client", 2) end
  options.check(opts, _M.OPTIONS, "k8s_shards.new")
  opts = opts or {}
  local name = opts.name
  if type(name) ~= "string" or not name:match "^[a-z0-9][-a-z0-9]*$" or name:match "%-$" or #name > 40 then
    error("k8s_shards.new: 'name' must be a DNS label of at most 40 characters", 2)
  end
  local count = opts.shards or 16
  if count ~= math.floor(count) or count < 1 or count > MAX_SHARDS then
    error(format("k8s_shards.new: 'shards' must be an integer from 1 to %d", MAX_SHARDS), 2)
  end
  local identity = opts.identity or leader.default_identity()
  local timing = {
    namespace = opts.namespace or client.namespace,
    identity = identity,
    lease_duration = opts.lease_duration,
    renew_deadline = opts.renew_deadline,
    retry_period = opts.retry_period,
  }
  local function elector(lease_name, role)
    local o = { name = lease_name, labels = { [SET_LABEL] = name, [ROLE_LABEL] = role } }
    for k, v in pairs(timing) do
      o[k] = v
    end
    return leader.new(client, o)
  end
  local self = setmetatable({
    client = client,
    name = name,
    namespace = timing.namespace,
    identity = identity,
    count = count,
    membership = elector(format("%s-member-%08x", name, fnv(identity)), "member"),
    shard = {},
    seen = {}, -- member lease name -> {record =, since =}
    live = { identity },
    listed = {}, -- shard index -> its Lease as the last survey read it
  }, ShardSet)
  for i = 1, count do
    self.shard[i] = elector(format("%s-shard-%d", name, i), "shard")
  end
  self.retry_period = self.membership.retry_period
  return self
end

function ShardSet:shard_of(key)
  return fnv(tostring(key)) % self.count + 1
end

-- The live member that wins shard i (rendezvous hashing).
function ShardSet:assignee(i)
  local best, best_h
  for _, m in ipairs(self.live) do
    local h = fnv(m .. "/" .. i)
    if not best_h or h > best_h or (h == best_h and m < best) then
      best, best_h = m, h
    end
  end
  return best
end

-- Reads the set's Leases (one LIST): the live members (by our clock), and every shard's Lease,
-- observed and kept for this step's tries (no GET each).
function ShardSet:survey(t)
  self.listed = {}
  local list, err = self.client:list_leases(self.namespace, { label_selector = SET_LABEL .. "=" .. self.name })
  if not list then return nil, err end
  local live, seen = { self.identity }, {}
  local by_name = {}
  for i, e in ipairs(self.shard) do
    by_name[e.name] = i
  end
  for _, lease in ipairs(list.items or {}) do
    local md, spec = lease.metadata or {}, lease.spec or {}
    local role = (md.labels or {})[ROLE_LABEL]
    if md.name == self.membership.name then
      self.listed.member = lease
    elseif role == "member" then
      local record = format("%s|%s", tostring(spec.holderIdentity), tostring(spec.renewTime))
      local before = self.seen[md.name]
      local since = (before and before.record == record) and before.since or t
      seen[md.name] = { record = record, since = since }
      local holder = spec.holderIdentity or ""
      if holder ~= "" and t < since + (tonumber(spec.leaseDurationSeconds) or self.membership.lease_duration) then
        live[#live + 1] = holder
      end
    elseif role == "shard" and by_name[md.name] then
      self.shard[by_name[md.name]]:observe(lease, t)
      self.listed[by_name[md.name]] = lease
    end
  end
  sort(live)
  self.seen = seen
  return live
end

function ShardSet:step()
  local live, err = self:survey(now())
  if not live then
    log.warning("k8s: shard set %s: %s", self.name, tostring(err))
  else
    if concat(live, ",") ~= concat(self.live, ",") then
      log.info("k8s: shard set %s: %d member(s): %s", self.name, #live, concat(live, ", "))
    end
    self.live = live
  end
  local _, merr = self.membership:try(self.listed.member)
  if merr then log.warning("k8s: shard set %s: membership: %s", self.name, tostring(merr)) end
  -- give back first, so that the new assignee can take the shard at its next step
  for i, e in ipairs(self.shard) do
    if self:assignee(i) ~= self.identity and e:holder() == self.identity then
      local ok, rerr = e:release()
      if not ok and rerr then log.warning("k8s: shard set %s: release shard %d: %s", self.name, i, tostring(rerr)) end
    end
  end
  for i, e in ipairs(self.shard) do
    if self:assignee(i) == self.identity then
      local ok, terr = e:try(self.listed[i])
      if not ok and terr then log.warning("k8s: shard set %s: shard %d: %s", self.name, i, tostring(terr)) end
    end
  end
  return self:held()
end

function ShardSet:held()
  local out = {}
  for i, e in ipairs(self.shard) do
    if e:is_leader() then out[#out + 1] = i end
  end
  return out
end

function ShardSet:owns(key)
  return self.shard[self:shard_of(key)]:is_leader()
end

function ShardSet:members()
  local out = {}
  for i, m in ipairs(self.live) do
    out[i] = m
  end
  return out
end

function ShardSet:stop() self.stopped = true end

function ShardSet:run(should_stop)
  self.stopped = false
  while not self.stopped and not (should_stop and should_stop()) do
    self:step()
    if not (self.stopped or (should_stop and should_stop())) then
      sleep(self.retry_period * (1 + 0.2 * random()))
    end
  end
end

function ShardSet:release()
  for _, e in ipairs(self.shard) do
    e:release()
  end
  return self.membership:release()
end

return _M

-- dconn.k8s.leader: leader election on a coordination.k8s.io/v1 Lease, after client-go's
-- tools/leaderelection, so that only one of several dconn agents moves Deployments.
--
--   local e = leader.new(client, {name=, namespace=, identity=, lease_duration=15,
--                                 renew_deadline=10, retry_period=2, on_started_leading=fn,
--                                 on_stopped_leading=fn, on_new_leader=fn(identity),
--                                 labels={...} (put on the Lease when we create it)})
--   e:try([lease]) -> true (we hold the lease now) | false [, err]     one acquire-or-renew step
--                                (lease: the Lease as just read, saving the GET)
--   e:step() -> leading          try(), then the log lines and callbacks run() makes on changes
--   e:holder() -> identity       of the lease as last read ("" when free)
--   e:is_leader() -> boolean     true only until the last successful renew + renew_deadline
--   e:run([should_stop])         loops (in a task): acquire every retry_period with 20 % jitter,
--                                renew every retry_period; calls the callbacks on changes;
--                                returns when should_stop() is true or after e:stop()
--   e:release()                  writes holderIdentity "" (leaseDurationSeconds 1) if we hold it
--
-- As in client-go, expiry is judged on our own clock: a lease held by someone else is taken
-- over only when its record has not changed for leaseDurationSeconds since we last saw it
-- change, so clock skew between agents does not matter. Updates carry the resourceVersion
-- read, so two candidates racing get one 409 and one success. Act only while is_leader().
local timer = require "dconn.timer"
local log = require "dconn.log"
local options = require "dconn._options"

local type, pairs, tostring, tonumber, error = type, pairs, tostring, tonumber, error
local setmetatable = setmetatable
local format, floor, random = string.format, math.floor, math.random
local now, sleep = timer.now, timer.sleep

local _M = { _VERSION = "0.1.0" }

local JITTER = 1.2 -- client-go's JitterFactor
local DEFAULTS = { lease_duration = 15, renew_deadline = 10, retry_period = 2 }
_M.OPTIONS = {
  name = "string",
  namespace = "string",
  identity = "string",
  lease_duration = "number",
  renew_deadline = "number",
  retry_period = "number",
  on_started_leading = "function",
  on_stopped_leading = "function",
  on_new_leader = "function",
  labels = "table",
}

local Elector = {}
Elector.__index = Elector

-- RFC 3339 with exactly six fractional digits (metav1.MicroTime).
local function micro_time(t)
  return timer.format_time(t, "iso_micro")
end
_M.micro_time = micro_time

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname", "r")
  local name = f and f:read("l") or "dconn"
  if f then f:close() end
  return name
end

-- hostname_pid, as client-go's examples build identities (unique per process on one host).
function _M.default_identity()
  local f = io.open("/proc/self/stat", "r")
  local pid = f and f:read("l"):match("^(%d+)")
  if f then f:close() end
  return format("%s_%s", hostname(), pid or format("%08x", random(0, 0x7fffffff)))
end

function _M.new(client, opts)
  if type(client) ~= "table" then error("k8s_leader.new: expected a dconn.k8s client", 2) end
  options.check(opts, _M.OPTIONS, "k8s_leader.new")
  opts = opts or {}
  if type(opts.name) ~= "string" or opts.name == "" then error("k8s_leader.new: 'name' is required", 2) end
  local self = setmetatable({
    client = client,
    name = opts.name,
    namespace = opts.namespace or client.namespace,
    identity = opts.identity or _M.default_identity(),
    on_started_leading = opts.on_started_leading,
    on_stopped_leading = opts.on_stopped_leading,
    on_new_leader = opts.on_new_leader,
    labels = opts.labels,
    leading = false,
  }, Elector)
  for k, v in pairs(DEFAULTS) do
    self[k] = opts[k] or v
  end
  if not (self.lease_duration > self.renew_deadline and self.renew_deadline > JITTER * self.retry_period) then
    error("k8s_leader.new: need lease_duration > renew_deadline > 1.2 * retry_period", 2)
  end
  return self
end

local function same_record(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for _, k in pairs { "holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaseTransitions" } do
    if a[k] ~= b[k] then return false end
  end
  return true
end

function Elector:observe(lease, t)
  local spec = lease.spec or {}
  if not (self.observed and same_record(spec, self.observed.spec or {})) then
    self.observed_time = t
    local holder = spec.holderIdentity or ""
    local before = self.observed and (self.observed.spec or {}).holderIdentity
    if holder ~= before and holder ~= "" and self.on_new_leader then self.on_new_leader(holder) end
  end
  self.observed = lease
end

function Elector:try(listed)
  local c, ns, t = self.client, self.namespace, now()
  local lease, err = listed, nil
  if not lease then
    lease, err = c:get_lease(ns, self.name)
  end
  if not lease then
    if err.code ~= 404 then return false, err end
    local created
    created, err = c:create_lease(ns, {
      apiVersion = "coordination.k8s.io/v1",
      kind = "Lease",
      metadata = { name = self.name, namespace = ns, labels = self.labels },
      spec = {
        holderIdentity = self.identity,
        leaseDurationSeconds = math.ceil(self.lease_duration),
        acquireTime = micro_time(t),
        renewTime = micro_time(t),
        leaseTransitions = 0,
      },
    })
    if not created then return false, err end
    self:observe(created, t)
    self.renewed_at = t
    return true
  end
  self:observe(lease, t)
  local spec = lease.spec or {}
  local holder = spec.holderIdentity or ""
  local duration = tonumber(spec.leaseDurationSeconds) or self.lease_duration
  if holder ~= "" and holder ~= self.identity and t < self.observed_time + duration then
    return false -- held by another candidate and not expired by our clock
  end
  local ours = holder == self.identity
  local new = {
    apiVersion = "coordination.k8s.io/v1",
    kind = "Lease",
    metadata = lease.metadata,
    spec = {
      holderIdentity = self.identity,
      leaseDurationSeconds = math.ceil(self.lease_duration),
      acquireTime = ours and spec.acquireTime or micro_time(t),
      renewTime = micro_time(t),
      leaseTransitions = floor(tonumber(spec.leaseTransitions) or 0) + (ours and 0 or 1),
    },
  }
  local updated
  updated, err = self.client:update_lease(ns, new)
  if not updated then return false, err end
  self:observe(updated, t)
  self.renewed_at = t
  return true
end

function Elector:is_leader()
  return self.renewed_at ~= nil
    and now() < self.renewed_at + self.renew_deadline
    and self.observed ~= nil
    and (self.observed.spec or {}).holderIdentity == self.identity
end

function Elector:stop() self.stopped = true end

--- One election step (what run() does each period): try, then log and call back on changes.
--- Returns whether we lead now.
function Elector:step()
  local ok, err = self:try()
  if err then log.warning("k8s: lease %s/%s: %s", self.namespace, self.name, tostring(err)) end
  if ok and not self.leading then
    self.leading = true
    log.info("k8s: %s became leader (lease %s/%s)", self.identity, self.namespace, self.name)
    if self.on_started_leading then self.on_started_leading() end
  elseif self.leading and not self:is_leader() then
    self.leading = false
    log.warning("k8s: %s lost the lease %s/%s", self.identity, self.namespace, self.name)
    if self.on_stopped_leading then self.on_stopped_leading() end
  end
  return self.leading
end

--- The holder of the lease as last read ("" when free, nil before the first read).
function Elector:holder()
  return self.observed and (self.observed.spec or {}).holderIdentity
end

function Elector:run(should_stop)
  self.stopped = false
  while not self.stopped and not (should_stop and should_stop()) do
    self:step()
    if not (self.stopped or (should_stop and should_stop())) then
      -- client-go: renew every RetryPeriod; acquire with wait.JitterUntil(RetryPeriod, 1.2)
      sleep(self.leading and self.retry_period or self.retry_period * (1 + random() * JITTER))
    end
  end
end

function Elector:release()
  local lease = self.observed
  if not (lease and (lease.spec or {}).holderIdentity == self.identity) then return false end
  local spec = lease.spec
  local released, err = self.client:update_lease(self.namespace, {
    apiVersion = "coordination.k8s.io/v1",
    kind = "Lease",
    metadata = lease.metadata,
    spec = {
      holderIdentity = "",
      leaseDurationSeconds = 1,
      acquireTime = spec.acquireTime,
      renewTime = micro_time(now()),
      leaseTransitions = spec.leaseTransitions,
    },
  })
  if not released then return false, err end
  self:observe(released, now())
  self.renewed_at, self.leading = nil, false
  return true
end

return _M

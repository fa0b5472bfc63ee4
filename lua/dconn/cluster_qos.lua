-- dconn.cluster_qos: per-cluster QoS aggregates for the rules, as the original's avg_qos_i: the
-- average and the maximum of one tick's predictions over the pipelines (candidates) of each
-- cluster, so that a rule can choose a cluster (reached through a kubeconfig context, moved to
-- with k8s.migrate) rather than a node. Also reachable as rules.clusters(p).
--
--   cluster_qos.aggregate(p_or_candidates) -> { order = { cluster, ... }, [cluster] = aggregate }
--     candidates: { { cluster=, node=, value = number or nil }, ... } (p.candidates of a rule);
--     a candidate without cluster counts as its own (its node). aggregate: { avg=, max=, count=
--     (with a prediction), failed= (without one), nodes = { node, ... } }; avg and max are nil
--     when no pipeline of the cluster has a prediction. order: clusters as first met.
--   cluster_qos.best(aggregates, "avg" | "max") -> cluster, value | nil   the highest, ties to
--     the first met; clusters without a prediction are never chosen
local type, ipairs, tostring, error = type, ipairs, tostring, error

local _M = { _VERSION = "0.1.0" }

local function valid(v) return type(v) == "number" and v == v end

function _M.aggregate(p)
  if type(p) ~= "table" then error("cluster_qos.aggregate: expected predictions or candidates", 2) end
  local candidates = type(p.candidates) == "table" and p.candidates or p
  local out = { order = {} }
  for _, c in ipairs(candidates) do
    local key = c.cluster ~= nil and tostring(c.cluster) or tostring(c.node)
    local a = out[key]
    if not a then
      a = { count = 0, failed = 0, nodes = {}, sum = 0 }
      out[key] = a
      out.order[#out.order + 1] = key
    end
    a.nodes[#a.nodes + 1] = c.node
    if valid(c.value) then
      a.count, a.sum = a.count + 1, a.sum + c.value
      if a.max == nil or c.value > a.max then a.max = c.value end
    else
      a.failed = a.failed + 1
    end
  end
  for _, key in ipairs(out.order) do
    local a = out[key]
    if a.count > 0 then a.avg = a.sum / a.count end
    a.sum = nil
  end
  return out
end

function _M.best(aggregates, how)
  if how ~= "avg" and how ~= "max" then error('cluster_qos.best: how must be "avg" or "max"', 2) end
  local best, value
  for _, key in ipairs(aggregates.order or {}) do
    local v = aggregates[key][how]
    if v ~= nil and (value == nil or v > value) then
      best, value = key, v
    end
  end
  return best, value
end

return _M

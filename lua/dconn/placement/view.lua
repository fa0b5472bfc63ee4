-- dconn.placement.view: one tick's predictions for a list of candidates, held in columns
-- (dconn._columns) and read through a thin view.
--
--   view.batch(list) -> batch     empty columns for the candidates of list
--   view.summarize(batch) -> batch   once its values are in: max, max_pos, count, std_dev,
--     population_std_dev of the values (each one C call over the column)
--   view.candidates(batch) -> a read-only list of candidate tables, each made on first access:
--     { node=, cluster=, index=, type=, value=, model=, error=, contenders=, observed=, noise= }
--   view.find(p, node) -> the candidate table of node in predictions p, or nil
--   view.best(p [, keep]) -> the candidate with the highest value (ties to the lowest index) among
--     those keep accepts (all when nil), and how many had no value
--   view.by_node(p) -> { [node] = value } of the candidates with a value (one per batch, shared,
--     recorded by dconn.placement.decisions without a copy)
--
-- A batch: { list=, n=, values=, observed=, noise=, model_noise= (columns), models = {[i] = name},
-- errors = {[i] = message}, contenders = {[i] = list} }. Targets that share a candidate list and a
-- predictor that does not depend on the target share one batch: a tick of 1,000 apps over the same
-- 100 nodes holds 100 predictions, not 100,000 tables. Predictions built by hand (rules' and gates'
-- callers, tests) are plain lists; every function here reads both.
-- Each predictions table has its own view, so what a rule writes into a candidate's table stays
-- with that target.
local columns = require "dconn._columns"
local decisions = require "dconn.placement.decisions"

local type, ipairs, rawset, setmetatable, error = type, ipairs, rawset, setmetatable, error
local huge = math.huge

local _M = { _VERSION = "0.1.0" }

local positions = setmetatable({}, { __mode = "k" }) -- list -> { [node] = i }, positional

local function index_of(list)
  local known = positions[list]
  if not known then
    known = { at = {}, positional = true }
    for i, c in ipairs(list) do
      if known.at[c.node] == nil then known.at[c.node] = i end
      if c.index ~= i - 1 then known.positional = false end
    end
    positions[list] = known
  end
  return known
end

function _M.summarize(b)
  b.max, b.max_pos = b.values:max()
  b.count, b.std_dev, b.population_std_dev = b.values:stats()
  return b
end

function _M.batch(list)
  local n = #list
  return {
    list = list,
    n = n,
    values = columns.new(n),
    observed = columns.new(n),
    noise = columns.new(n),
    model_noise = columns.new(n),
    models = {},
    errors = {},
    contenders = {},
  }
end

local function entry(b, i)
  local c = b.list[i]
  if not c then return nil end
  return {
    node = c.node,
    cluster = c.cluster,
    index = c.index,
    type = c.type,
    value = b.values[i],
    model = b.models[i],
    error = b.errors[i],
    contenders = b.contenders[i],
    observed = b.observed[i],
    noise = b.noise[i],
  }
end

local function read_only() error("the candidates of predictions are read-only", 2) end

local batch_of = setmetatable({}, { __mode = "k" }) -- view -> its batch

-- One metatable for every view (a view per target and tick: no closures made for each).
local VIEW = {
  __index = function(t, i)
    local e = type(i) == "number" and entry(batch_of[t], i) or nil
    if e then rawset(t, i, e) end
    return e
  end,
  __len = function(t) return batch_of[t].n end,
  __pairs = function(t)
    local n = batch_of[t].n
    return function(_, i)
      i = i + 1
      if i <= n then return i, t[i] end
    end, t, 0
  end,
  __newindex = read_only,
}

function _M.candidates(b)
  local v = setmetatable({}, VIEW)
  batch_of[v] = b
  return v
end

function _M.find(p, node)
  if node == nil or type(p) ~= "table" then return nil end
  local b = p.batch
  if b then
    local i = index_of(b.list).at[node]
    return i and p.candidates[i] or nil
  end
  if type(p.candidates) ~= "table" then return nil end
  for _, c in ipairs(p.candidates) do
    if c.node == node then return c end
  end
  return nil
end

local function valid(q) return type(q) == "number" and q == q end

function _M.best(p, keep)
  local b = p.batch
  if b and not keep and index_of(b.list).positional then
    if b.count == nil then _M.summarize(b) end
    return b.max_pos and p.candidates[b.max_pos] or nil, b.n - b.count
  end
  local best, best_index, failed = nil, nil, 0
  for pos, c in ipairs(p.candidates or {}) do
    if not valid(c.value) then
      failed = failed + 1
    elseif not keep or keep(c) then
      local i = type(c.index) == "number" and c.index or pos - 1
      if not best or c.value > best.value or (c.value == best.value and i < best_index) then
        best, best_index = c, i
      end
    end
  end
  return best, failed
end

function _M.by_node(p)
  local holder = p.batch or p
  if not holder.by_node then
    local values = {}
    if p.batch then
      local b = p.batch
      for i, c in ipairs(b.list) do
        local v = b.values[i]
        if v and v > -huge and v < huge then values[c.node] = v end
      end
    else
      for _, c in ipairs(p.candidates) do
        if c.value then values[c.node] = c.value end
      end
    end
    holder.by_node = p.batch and decisions.share(values) or values
  end
  return holder.by_node
end

return _M

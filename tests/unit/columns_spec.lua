-- dconn._columns (per-candidate numbers in C) and dconn.placement.view (the predictions read
-- through them): the view must read exactly as the hand-made lists the rules were written for.
local columns = require "dconn._columns"
local view = require "dconn.placement.view"
local rules = require "dconn.placement.rules"

describe("dconn._columns", function()
  it("reads missing values as nil and keeps what is set", function()
    local c = columns.new(4)
    assert.equal(4, #c)
    assert.is_nil(c[1])
    c[2], c[3] = 0.25, -1
    assert.equal(0.25, c[2])
    assert.equal(-1, c[3])
    c[2] = nil
    assert.is_nil(c[2])
    c[4] = 0 / 0 -- NaN is missing, never read back
    assert.is_nil(c[4])
    assert.is_nil(c[0])
    assert.is_nil(c[5])
    assert.is_nil(c[1.5])
  end)

  it("refuses writes outside it and values that are not numbers", function()
    local c = columns.new(2)
    assert.has_error(function() c[3] = 1 end, "columns: index 3 is outside 1..2")
    assert.has_error(function() c[1] = "0.5" end, "columns: a value must be a number or nil, got string")
    assert.has_error(function() columns.new(-1) end)
    assert.has_error(function() columns.new(1 << 40) end)
  end)

  it("gives the highest value with ties to the lowest position, skipping missing ones", function()
    local c = columns.new(5)
    assert.is_nil(c:max())
    c[2], c[3], c[5] = 0.4, 0.7, 0.7
    local v, i = c:max()
    assert.equal(0.7, v)
    assert.equal(3, i)
  end)

  it("gives the count and both standard deviations of the present values", function()
    local c = columns.new(4)
    assert.same({ 0 }, { c:stats() })
    c[1] = 2
    assert.same({ 1, 0, 0 }, { c:stats() })
    c[3] = 4
    local n, sd, psd = c:stats()
    assert.equal(2, n)
    assert.near(math.sqrt(2), sd, 1e-12)
    assert.near(1, psd, 1e-12)
  end)

  it("takes absolute differences, missing where either side is", function()
    local a, b, out = columns.new(3), columns.new(3), columns.new(3)
    a[1], a[2], b[1], b[3] = 0.5, 0.2, 0.8, 0.1
    out:abs_diff(a, b)
    assert.near(0.3, out[1], 1e-12)
    assert.is_nil(out[2])
    assert.is_nil(out[3])
    assert.has_error(function() out:abs_diff(a, columns.new(2)) end)
  end)

  it("keeps a moving window per row in a ring", function()
    local r, e, m = columns.ring(2, 3), columns.new(2), columns.new(2)
    r:mean(m)
    assert.is_nil(m[1])
    for _, v in ipairs { 1, 2, 3, 4, 5 } do
      e[1] = v
      r:push(e)
    end
    r:mean(m)
    assert.equal(4, m[1]) -- the last three: 3, 4, 5
    assert.is_nil(m[2]) -- nothing pushed into row 2
    local other = columns.ring(1, 3)
    other:copy_row(r, 1, 1)
    local m1 = columns.new(1)
    other:mean(m1)
    assert.equal(4, m1[1])
    r:clear(1)
    r:mean(m)
    assert.is_nil(m[1])
    assert.has_error(function() r:clear(3) end)
    assert.has_error(function() columns.ring(2, 0) end)
    assert.has_error(function() columns.ring(1 << 20, 100) end, "columns: a ring of 1048576 x 100 values is too large")
    assert.has_error(function() other:copy_row(columns.ring(1, 4), 1, 1) end)
  end)
end)

-- A batch of the given values ({node, value} pairs, positional indexes) and its predictions.
local function batched(current, ...)
  local list = {}
  for i, c in ipairs { ... } do
    list[i] = { node = c[1], cluster = "c-" .. c[1], index = i - 1 }
  end
  local b = view.batch(list)
  for i, c in ipairs { ... } do
    b.values[i] = c[2]
    b.models[i] = c[2] and "m" or nil
    b.errors[i] = c[2] == nil and "failed" or nil
  end
  b.view = view.candidates(b)
  return { metric = "qos", batch = b, candidates = b.view, current = current }
end

-- The same predictions as a plain list.
local function plain(current, ...)
  local list = {}
  for i, c in ipairs { ... } do
    list[i] = { node = c[1], cluster = "c-" .. c[1], index = i - 1, value = c[2] }
  end
  return { metric = "qos", candidates = list, current = current }
end

describe("dconn.placement.view", function()
  it("reads candidates as tables made on first access, read-only", function()
    local p = batched("b", { "a", 0.4 }, { "b", nil }, { "c", 0.9 })
    assert.equal(3, #p.candidates)
    local seen = {}
    for i, c in ipairs(p.candidates) do
      seen[i] = { c.node, c.cluster, c.index, c.value, c.model, c.error }
    end
    assert.same(
      { { "a", "c-a", 0, 0.4, "m" }, { "b", "c-b", 1, nil, nil, "failed" }, { "c", "c-c", 2, 0.9, "m" } },
      seen
    )
    assert.equal(p.candidates[1], p.candidates[1]) -- one table per candidate
    local n = 0
    for _ in pairs(p.candidates) do
      n = n + 1
    end
    assert.equal(3, n)
    assert.has_error(function() p.candidates[4] = {} end, "the candidates of predictions are read-only")
    assert.equal("c", view.find(p, "c").node)
    assert.is_nil(view.find(p, "z"))
  end)

  it("picks the same best candidate as a plain list, for random values", function()
    local seed = 7
    local function rand()
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed / 2147483648
    end
    for _ = 1, 200 do
      local pairs_ = {}
      for i = 1, 1 + math.floor(rand() * 8) do
        local v = rand() < 0.2 and nil or math.floor(rand() * 4) / 4 -- ties and failures
        pairs_[i] = { "n" .. i, v }
      end
      local b, pb = view.best(batched(nil, table.unpack(pairs_)))
      local l, pl = view.best(plain(nil, table.unpack(pairs_)))
      assert.equal(l and l.node, b and b.node)
      assert.equal(pl, pb)
    end
  end)

  it("gives the rules the same decisions as plain lists", function()
    local cases = {
      { "a", { "a", 0.3 }, { "b", 0.8 }, { "c", 0.8 } },
      { "b", { "a", 0.3 }, { "b", 0.8 } },
      { "a", { "a", 0.1 }, { "b", 0.4 } },
      { "z", { "a", 0.6 }, { "b", nil } },
    }
    for _, case in ipairs(cases) do
      local current = table.remove(case, 1)
      local d1 = rules.max_qos(batched(current, table.unpack(case)), {})
      local d2 = rules.max_qos(plain(current, table.unpack(case)), {})
      assert.same(d2, d1)
    end
  end)

  it("shares one by-node map per batch, without failed candidates", function()
    local p = batched("a", { "a", 0.3 }, { "b", nil }, { "c", 0.5 })
    local q = { batch = p.batch, candidates = p.candidates }
    assert.same({ a = 0.3, c = 0.5 }, view.by_node(p))
    assert.equal(view.by_node(p), view.by_node(q))
  end)
end)

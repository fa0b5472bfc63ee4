-- dconn.cluster_qos: per-cluster averages and maxima of one tick's predictions.
local cluster_qos = require "dconn.cluster_qos"
local rules = require "dconn.placement.rules"

local p = {
  candidates = {
    { node = "edge-1", cluster = "edge", value = 0.4 },
    { node = "cloud-1", cluster = "cloud", value = 0.9 },
    { node = "edge-2", cluster = "edge", value = 0.8 },
    { node = "cloud-2", cluster = "cloud", value = 0.1 },
    { node = "cloud-3", cluster = "cloud" }, -- its prediction failed
    { node = "lone", value = 0.3 }, -- no cluster: its own
  },
}

describe("cluster_qos", function()
  it("averages and maximises over the pipelines of each cluster, failed ones left out", function()
    local a = cluster_qos.aggregate(p)
    assert.same({ "edge", "cloud", "lone" }, a.order)
    assert.near(0.6, a.edge.avg, 1e-12)
    assert.equals(0.8, a.edge.max)
    assert.near(0.5, a.cloud.avg, 1e-12)
    assert.equals(0.9, a.cloud.max)
    assert.same({ 2, 1 }, { a.cloud.count, a.cloud.failed })
    assert.same({ "cloud-1", "cloud-2", "cloud-3" }, a.cloud.nodes)
    assert.equals(0.3, a.lone.avg)
  end)

  it("picks the best cluster by avg or by max, which can differ", function()
    local a = cluster_qos.aggregate(p.candidates)
    local best, value = cluster_qos.best(a, "avg")
    assert.equals("edge", best)
    assert.near(0.6, value, 1e-12)
    assert.same({ "cloud", 0.9 }, { cluster_qos.best(a, "max") })
  end)

  it("never picks a cluster without a prediction", function()
    local a = cluster_qos.aggregate { { node = "n", cluster = "c" } }
    assert.is_nil(a.c.avg)
    assert.is_nil(cluster_qos.best(a, "avg"))
    assert.has_error(function() cluster_qos.best(a, "median") end, 'cluster_qos.best: how must be "avg" or "max"')
  end)

  it("is what the rules reach as rules.clusters", function()
    assert.equals(0.5, rules.clusters(p).cloud.avg)
  end)
end)

-- dconn.server's fixed responses: answered by the server itself, without the handler, from a
-- body it keeps; a refreshed one is rendered again by its Lua function once expired
-- (srv:expire, max_age, a hit on another fixed path), with a gzip form for the clients that take it.
local server = require "dconn.server"
local http = require "dconn.http"
local timer = require "dconn.timer"

local IDENTITY = { ["Accept-Encoding"] = "identity" }
local GZIP = { ["Accept-Encoding"] = "gzip" }

describe("dconn.server fixed responses", function()
  local srv, base, refreshes, text, handled, fail

  local function start(fixed)
    srv = assert(server.listen {
      port = 0,
      handler = function()
        handled = handled + 1
        return 200, { ["content-type"] = "text/plain" }, "from the handler"
      end,
      fixed = fixed,
    })
    base = "http://" .. srv:address()
  end

  local function metrics_entry(extra)
    local entry = {
      path = "/metrics",
      content_type = "text/plain; version=0.0.4",
      max_age = 60,
      gzip = true,
      refresh = function()
        refreshes = refreshes + 1
        if fail then error("refresh failed on purpose") end
        return text
      end,
    }
    for k, v in pairs(extra or {}) do
      entry[k] = v
    end
    return entry
  end

  local function get(path, headers, method)
    local status, body, h = http.request { method = method or "GET", url = base .. path, headers = headers }
    assert.is_truthy(status, body)
    return status, body, h
  end

  before_each(function()
    refreshes, handled, fail = 0, 0, false
    text = "# TYPE x counter\n" .. string.rep('x{target="node-1",model="lstm"} 1\n', 500)
  end)

  after_each(function()
    if srv then srv:close() end
    srv = nil
  end)

  it("renders once, then answers from the kept body until expired; a change shows at the next request", function()
    start { metrics_entry() }
    local status, body, headers = get("/metrics", IDENTITY)
    assert.equals(200, status)
    assert.equals(text, body)
    assert.equals("text/plain; version=0.0.4", headers["content-type"])
    assert.equals("Accept-Encoding", headers["vary"])
    assert.is_nil(headers["content-encoding"])
    for _ = 1, 5 do
      assert.equals(text, select(2, get("/metrics", IDENTITY)))
    end
    assert.equals(1, refreshes)
    text = text .. "y 2\n"
    srv:expire("/metrics")
    assert.equals(text, select(2, get("/metrics", IDENTITY)))
    assert.equals(2, refreshes)
    assert.equals(0, handled)
    assert.same({ ["/metrics"] = 7 }, srv:fixed_hits())
  end)

  it("sends the gzip form to clients that take it, which decodes to the identity body", function()
    start { metrics_entry() }
    local _, plain, plain_headers = get("/metrics", IDENTITY)
    local _, decoded, headers = get("/metrics", GZIP) -- libcurl decodes what it is sent
    assert.equals("gzip", headers["content-encoding"])
    assert.equals("Accept-Encoding", headers["vary"])
    assert.equals(plain, decoded)
    assert.equals(tostring(#plain), plain_headers["content-length"])
    assert.is_true(tonumber(headers["content-length"]) < #plain / 10)
    for _, refused in ipairs { "gzip;q=0", "br, gzip; q=0.000", "*;q=0", "deflate", "" } do
      local _, body, h = get("/metrics", { ["Accept-Encoding"] = refused })
      assert.is_nil(h["content-encoding"], refused)
      assert.equals(plain, body)
    end
    for _, taken in ipairs { "deflate, gzip;q=0.5", "GZIP", "x-gzip", "*", "identity;q=0.1, *;q=1" } do
      local _, body, h = get("/metrics", { ["Accept-Encoding"] = taken })
      assert.equals("gzip", h["content-encoding"], taken)
      assert.equals(plain, body)
    end
    assert.equals(1, refreshes)
  end)

  it("answers HEAD with the headers of GET and no body", function()
    start { metrics_entry() }
    local status, body, headers = get("/metrics", IDENTITY, "HEAD")
    assert.equals(200, status)
    assert.equals("", body)
    assert.equals(tostring(#text), headers["content-length"])
    status, body, headers = get("/metrics", GZIP, "HEAD")
    assert.equals(200, status)
    assert.equals("", body)
    assert.equals("gzip", headers["content-encoding"])
  end)

  it("renders again after a hit on another fixed path (its body may count them), and after max_age", function()
    start {
      { path = "/healthz", body = "ok", content_type = "text/plain" },
      metrics_entry(),
    }
    get("/metrics")
    get("/metrics")
    assert.equals(1, refreshes)
    assert.equals("ok", select(2, get("/healthz")))
    get("/metrics")
    get("/metrics")
    assert.equals(2, refreshes)
    srv:close()
    start { metrics_entry { max_age = 0.05 } }
    get("/metrics")
    local before = refreshes
    timer.sleep(0.1)
    get("/metrics")
    assert.equals(before + 1, refreshes)
  end)

  it("keeps the body when a refresh gives the same text, and the handler answers when it fails", function()
    start { metrics_entry() }
    get("/metrics")
    srv:expire("/metrics")
    assert.equals(text, select(2, get("/metrics", GZIP)))
    assert.equals(2, refreshes)
    fail = true
    srv:expire("/metrics")
    local status, body = get("/metrics")
    assert.equals(200, status)
    assert.equals("from the handler", body)
    assert.equals(1, handled)
  end)

  it("leaves a request without the bearer token to the handler", function()
    start { metrics_entry { token = "s3cr3t-token" } }
    assert.equals("from the handler", select(2, get("/metrics")))
    assert.equals("from the handler", select(2, get("/metrics", { Authorization = "Bearer wrong-token!" })))
    assert.equals(2, handled)
    assert.equals(0, refreshes)
    assert.equals(text, select(2, get("/metrics", { Authorization = "Bearer s3cr3t-token" })))
    assert.equals(text, select(2, get("/metrics", { Authorization = "bearer s3cr3t-token" })))
    assert.equals(2, handled)
    assert.equals(1, refreshes)
  end)

  it("rejects bad fixed entries and ignores expire once closed", function()
    local function listen(entry)
      return server.listen { port = 0, handler = function() end, fixed = { entry } }
    end
    assert.has_error(function()
      listen { path = "/x", body = "a", refresh = function() end }
    end, "server.listen: fixed[1] has both a body and a refresh function")
    assert.has_error(
      function() listen { path = "/x", refresh = "no" } end,
      "server.listen: fixed[1].refresh must be a function"
    )
    assert.has_error(
      function() listen { path = "/x", body = "a", token = "" } end,
      "server.listen: fixed[1].token must not be empty"
    )
    assert.has_error(function() listen { path = "/x", body = "a", gzip = 1 } end)
    assert.has_error(function() listen { path = "/x", body = "a", max_age = -1 } end)
    start { metrics_entry() }
    assert.has_error(function() srv:expire("/nope") end, "dconn.server: no fixed response on /nope")
    srv:close()
    srv:expire("/metrics")
  end)
end)

-- dconn.error: the one error value of the library. Every client returns failures as `nil, err`
-- with err such a value, whatever the service behind it, so a caller can branch on err.kind and
-- print err without knowing which client produced it. Misuse (a wrong type, an unknown option)
-- raises a string instead; see dconn._options.
--
--   error.new(kind, message [, fields]) -> err   a table: kind, message, and the fields given
--   error.is(v) -> true when v is such a value
--   tostring(err), "text" .. err, format("%s", err), log.error("%s", err)   the one-line text
--
-- err.from names the client that made it and picks the text tostring gives, the same text each
-- client gave before it shared this value (logs and tests compare them). The fields each client
-- keeps beside kind and message:
--   from      fields                                     tostring(err)
--   http      method, url (secrets "***"), attempts,      "GET https://h/p: connect error: <message>"
--             status, body, headers (kind http, json)
--   k8s       reason, code (the HTTP status of an API     "NotFound (404): <message>",
--             Status), status, details                    "Transport (connect): ...", "Config (-): ..."
--   tracker   error_code (MLflow's), status, attempts     "RESOURCE_DOES_NOT_EXIST: <message>"
--   prom      status, error_type (Prometheus's)           <message> ("prometheus http://h:9090/...: ...")
--   replay, model                                          <message>
--
-- Kinds, the same words whichever client:
--   dns connect tls timeout too_large protocol canceled other
--               no usable answer: dconn.http's transport failures, passed on as they are
--   http        the service answered with an error status it did not say more about (err.status;
--               the service's own code beside it: k8s reason, tracker error_code, prom error_type)
--   not_found   what was named does not exist (an HTTP 404, MLflow's RESOURCE_DOES_NOT_EXIST, a
--               cluster a replay file does not hold)
--   json        a body that is not JSON, or a value JSON cannot encode
--   format      an answer or a file of the wrong shape (a CSV without its columns, a weights file
--               that does not fit its spec, an answer without its data)
--   invalid     a value the service or the library refuses at run time (an MLflow filter, a
--               run's state, a model's input, a series too short to backtest)
--   config      configuration that cannot be used (a kubeconfig, an environment variable, a URI)
--   unsupported something this client or its server does not do
--   io          a local file that cannot be read or written
--   no_data     no data for the time or the series asked about (prom, replay)
--   exec        a Kubernetes exec credential plugin failed
--   rollout     a Kubernetes rollout failed or did not finish in time (reason
--               ProgressDeadlineExceeded or Timeout)
local type, tostring, pairs, getmetatable, setmetatable = type, tostring, pairs, getmetatable, setmetatable
local format = string.format

local _M = { _VERSION = "0.1.0" }

-- Each client's text, as it was before the clients shared this value.
local TEXT = {
  http = function(e)
    return format("%s %s: %s error: %s", e.method or "?", e.url or "?", e.kind, e.message)
  end,
  -- the kind was shown only where k8s had one: transport failures and exec plugins
  k8s = function(e)
    local shown = e.code or ((e.reason == "Transport" or e.kind == "exec") and e.kind) or "-"
    return format("%s (%s): %s", e.reason, tostring(shown), e.message)
  end,
  tracker = function(e) return format("%s: %s", e.error_code, e.message) end,
}

local MT = {
  __name = "dconn.error",
  __tostring = function(e)
    local text = TEXT[e.from]
    if text then return text(e) end
    return tostring(e.message)
  end,
  -- `"context: " .. err` keeps working where errors used to be strings
  __concat = function(a, b) return tostring(a) .. tostring(b) end,
}

--- A new error value: kind (a word above), message (one line), fields kept as they are.
function _M.new(kind, message, fields)
  if type(kind) ~= "string" then error("error.new: kind must be a string, got " .. type(kind), 2) end
  local e = {}
  if fields then
    if type(fields) ~= "table" then error("error.new: fields must be a table, got " .. type(fields), 2) end
    for k, v in pairs(fields) do
      e[k] = v
    end
  end
  e.kind, e.message = kind, tostring(message)
  return setmetatable(e, MT)
end

function _M.is(v)
  return getmetatable(v) == MT
end

return _M

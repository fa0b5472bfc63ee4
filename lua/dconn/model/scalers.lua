-- dconn.model.scalers: a model's scikit-learn scalers from a JSON file, as dconn.model layers.
-- Internal (dconn.model: a spec's `scalers`, model.load's opts.scalers).
--
--   scalers.read(path) -> { x = layer | nil, y = layer | nil } | nil, message
--
-- The file holds the fitted attributes of the input scaler `x` and the target scaler `y` (either
-- may be absent), as scikit-learn names them:
--   { "x": { "min_": [...], "scale_": [...] },     MinMaxScaler: x * scale_ + min_
--     "y": { "mean_": [...], "scale_": [...] } }   StandardScaler: (x - mean_) / scale_
-- (json.dump({"x": {"min_": sx.min_.tolist(), "scale_": sx.scale_.tolist()}, ...})). The other
-- attributes scikit-learn keeps (data_min_, data_max_, data_range_, var_, n_samples_seen_,
-- n_features_in_, feature_range, feature_names_in_) may be there and are not used. The x layer
-- scales the inputs before the spec's first layer, the y layer (inverse) maps the last layer's
-- output back to target units.
local json = require "dconn.json"
local fs = require "dconn.fs"

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local format = string.format

local _M = { _VERSION = "0.1.0" }

local IGNORED = {
  data_min_ = true,
  data_max_ = true,
  data_range_ = true,
  var_ = true,
  n_samples_seen_ = true,
  n_features_in_ = true,
  feature_range = true,
  feature_names_in_ = true,
}

local function numbers(v)
  if type(v) ~= "table" or #v == 0 then return nil end
  for i = 1, #v do
    if type(v[i]) ~= "number" then return nil end
  end
  return v
end

local function layer_of(path, which, s)
  if type(s) ~= "table" then return nil, format("%s: %s must be an object of the scaler's attributes", path, which) end
  for k in pairs(s) do
    if k ~= "min_" and k ~= "mean_" and k ~= "scale_" and not IGNORED[k] then
      return nil,
        format(
          "%s: %s.%s: unknown attribute (min_ and scale_ for MinMaxScaler, mean_ and scale_ for StandardScaler)",
          path,
          which,
          tostring(k)
        )
    end
  end
  local offset = s.min_ ~= nil and "min_" or "mean_"
  if s.min_ ~= nil and s.mean_ ~= nil then
    return nil, format("%s: %s has both min_ and mean_ (one scaler: MinMaxScaler or StandardScaler)", path, which)
  end
  for _, k in ipairs { offset, "scale_" } do
    if not numbers(s[k]) then return nil, format("%s: %s.%s must be a non-empty list of numbers", path, which, k) end
  end
  if #s[offset] ~= #s.scale_ then
    return nil, format("%s: %s.%s has %d values, scale_ %d", path, which, offset, #s[offset], #s.scale_)
  end
  local inverse = which == "y" or nil
  if offset == "min_" then return { type = "MinMax", min = s.min_, scale = s.scale_, inverse = inverse } end
  return { type = "Standard", mean = s.mean_, scale = s.scale_, inverse = inverse }
end

function _M.read(path)
  local text, err = fs.read_file(path)
  if not text then return nil, err.message end
  local doc, jerr = json.decode(text)
  if type(doc) ~= "table" then
    return nil, format("%s: %s", path, jerr or "expected an object {x = {...}, y = {...}}")
  end
  for k in pairs(doc) do
    if k ~= "x" and k ~= "y" then
      return nil, format("%s: unknown key '%s' (x: the input scaler, y: the target scaler)", path, tostring(k))
    end
  end
  if doc.x == nil and doc.y == nil then return nil, path .. ": neither an x nor a y scaler" end
  local out = {}
  for _, which in ipairs { "x", "y" } do
    if doc[which] ~= nil then
      local layer, lerr = layer_of(path, which, doc[which])
      if not layer then return nil, lerr end
      out[which] = layer
    end
  end
  return out
end

return _M

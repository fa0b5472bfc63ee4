-- dconn.json: cjson with null, array marker, exact integers, bounded depth, error values.
local json = require "dconn.json"

describe("dconn.json", function()
  it("round-trips millisecond timestamps and large integers exactly", function()
    local text = json.encode({ ts = 1715762700123, big = 123456789012345678, micro = 1715762700123456 })
    assert.matches('"ts":1715762700123', text)
    assert.matches('"big":123456789012345678', text)
    assert.matches('"micro":1715762700123456', text)
    local back = json.decode(text)
    assert.equals(1715762700123, back.ts)
    assert.equals(1715762700123456, back.micro)
    assert.equals(text:match('"ts":%d+'), json.encode(back):match('"ts":%d+'))
  end)

  it("encodes marked empty arrays as [] and plain empty tables as {}", function()
    assert.equals("[]", json.encode(json.array()))
    assert.equals("[]", json.encode(json.empty_array))
    assert.equals("{}", json.encode({}))
    assert.equals('{"a":{"b":[]}}', json.encode({ a = { b = json.array({}) } }))
    assert.equals("[1,2]", json.encode(json.array { 1, 2 }))
    assert.has_error(function() json.empty_array[1] = 1 end)
  end)

  it("has a null sentinel both ways", function()
    local v = json.decode('{"a":null,"b":[1,null]}')
    assert.equals(json.null, v.a)
    assert.equals(json.null, v.b[2])
    assert.equals('{"a":null}', json.encode({ a = json.null }))
  end)

  it("rejects NaN and infinities on encode with an error value", function()
    for _, bad in ipairs { 0 / 0, math.huge, -math.huge } do
      local text, err = json.encode({ x = bad })
      assert.is_nil(text)
      assert.equals("json.encode: Cannot serialise number: must not be NaN or Inf", err)
    end
  end)

  it("refuses on decode a number too large for a double, which encode could not write back", function()
    for _, bad in ipairs { "1e999", '{"a":[1,-3e3333]}', "[" .. string.rep("9", 400) .. "]", "1.5E+0400" } do
      local value, err = json.decode(bad)
      assert.is_nil(value, bad)
      assert.equals("invalid JSON: a number too large for a double", err)
    end
    assert.same({ 1e300, 1e-400, 1234567890123456789.0 }, json.decode("[1e300, 1e-400, 1234567890123456789]"))
    -- long runs of digits in strings, 308 digits, long fractions and 3-digit exponents that stay
    -- finite are values like any other
    local long = string.rep("7", 400)
    assert.same({ long, 1e-300 }, json.decode('["' .. long .. '", 1e-300]'))
    assert.same({ 9e307 }, json.decode("[9" .. string.rep("0", 307) .. "]"))
    assert.same({ 0.5 }, json.decode("[0.5" .. string.rep("0", 400) .. "]"))
  end)

  it("returns error values for cycles, functions and bad input, never raising", function()
    local t = {}
    t.self = t
    local text, err = json.encode(t)
    assert.is_nil(text)
    assert.matches("nesting deeper than 128", err)
    text, err = json.encode({ f = print })
    assert.is_nil(text)
    assert.matches("Cannot serialise function", err)
    for _, bad in ipairs { "", "{", '{"a":1,}', "[1,2", "nul", "<html>502 Bad Gateway</html>", "\0\1\2", "NaN" } do
      local value, decode_err = json.decode(bad)
      assert.is_nil(value, bad)
      assert.matches("^invalid JSON: ", decode_err)
    end
  end)

  it("limits decode depth", function()
    local ok = json.decode(string.rep("[", 128) .. string.rep("]", 128))
    assert.is_table(ok)
    local value, err = json.decode(string.rep("[", 129) .. string.rep("]", 129))
    assert.is_nil(value)
    assert.matches("too many nested", err)
  end)

  it("raises on misuse", function()
    assert.has_error(function() json.decode(42) end, "json.decode: expected a string, got number")
    assert.has_error(function() json.array(1) end)
  end)

  it("leaves strings that look like its internal tokens alone", function()
    local tricky = "\1dconn-json-00000000-1\1"
    local text = json.encode({ s = tricky, n = 123456789012345678 })
    assert.equals(tricky, json.decode(text).s)
  end)
end)

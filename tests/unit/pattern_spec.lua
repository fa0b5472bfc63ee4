-- dconn._pattern, the matcher policies get for string.find/match/gmatch/gsub: the same answers
-- as Lua's own string library on every pattern feature (compared call by call), and a clear
-- error instead of minutes of backtracking.
local pattern = require "dconn._pattern"

local SUBJECTS = {
  "",
  "hello world",
  "  trim me  ",
  "a,b,,c",
  "key=value; k2=v2",
  "THE (quick) [brown] fox 123 %x",
  "aaa",
  "abcabc",
  "\0a\0b",
  "x=1, y=22, z=333",
}
local PATTERNS = {
  "",
  "o",
  "l+",
  "l*",
  "l-o",
  "^h",
  "d$",
  "^%s*(.-)%s*$",
  "([^,]*)",
  "(%w+)=(%w+)",
  "%b()",
  "%f[%w]%w+",
  "()a()",
  "(a)%1",
  "[%a_][%w_]*",
  "[]]",
  "[^%s]+",
  "%d+",
  ".-",
  "a?b",
  "[a-c]+",
  "%u",
  "%x+",
  "%%",
  "(h)(e)(l)",
  "$",
  "^",
  ".",
  "%z",
  "[%z]",
  "\0",
  "%p",
  "((a)(b))",
  "%W+",
  "x=(%d+)",
  "[%-]",
  "[a-]",
  "%S-$",
}
local REPLACEMENTS = {
  "<%0>",
  "%1",
  "x",
  "%%",
  "%2",
  7,
  function(x) return x and x:upper() end,
  function() return false end,
  { a = "A", hello = 1 },
}

-- pcall's results of one call, as text, so that the two sides compare with one equals.
local function outcome(fn, ...)
  local r = table.pack(pcall(fn, ...))
  for i = 1, r.n do
    r[i] = (math.type(r[i]) or type(r[i])) .. ":" .. tostring(r[i])
  end
  -- errors without the caller's position and the function's table ('string.find' or
  -- 'dconn._pattern.find')
  if r[1] == "boolean:false" then
    r[2] = r[2]:gsub("^string:[^:]*:%d+: ", "string:"):gsub("'[%w_.]*%.(%w+)'", "'%1'")
  end
  return table.concat(r, " | ", 1, r.n)
end

local function iterate(gmatch, s, p, init)
  local out = {}
  for a, b in gmatch(s, p, init) do
    out[#out + 1] = tostring(a) .. "/" .. tostring(b)
  end
  return table.concat(out, ",")
end

describe("the bounded pattern matcher", function()
  it("answers find, match and gmatch as Lua's string library does", function()
    for _, s in ipairs(SUBJECTS) do
      for _, p in ipairs(PATTERNS) do
        for _, init in ipairs { 1, 2, -3, 0, 100 } do
          local case = string.format("%q %q %d", s, p, init)
          assert.equals(outcome(string.find, s, p, init), outcome(pattern.find, s, p, init), "find " .. case)
          assert.equals(outcome(string.find, s, p, init, true), outcome(pattern.find, s, p, init, true), case)
          assert.equals(outcome(string.match, s, p, init), outcome(pattern.match, s, p, init), "match " .. case)
          assert.equals(iterate(string.gmatch, s, p, init), iterate(pattern.gmatch, s, p, init), "gmatch " .. case)
        end
      end
    end
  end)

  it("answers gsub as Lua's string library does", function()
    for _, s in ipairs(SUBJECTS) do
      for _, p in ipairs(PATTERNS) do
        for _, r in ipairs(REPLACEMENTS) do
          for _, max in ipairs { false, 0, 1 } do
            local case = string.format("%q %q %s %s", s, p, tostring(r), tostring(max))
            assert.equals(
              outcome(string.gsub, s, p, r, max or nil),
              outcome(pattern.gsub, s, p, r, max or nil),
              "gsub " .. case
            )
          end
        end
      end
    end
  end)

  it("raises Lua's errors for malformed patterns and bad arguments", function()
    for _, bad in ipairs { "%", "[a", "(", ")", "%b", "%f", "%fa", "%1", "(()", "%g(", ("(x)"):rep(33) } do
      assert.equals(outcome(string.find, "abc", bad), outcome(pattern.find, "abc", bad), bad)
      assert.equals(outcome(string.gsub, "abc", bad, "x"), outcome(pattern.gsub, "abc", bad, "x"), bad)
    end
    assert.equals(outcome(string.gsub, "abc", "b", true), outcome(pattern.gsub, "abc", "b", true))
    assert.equals(outcome(string.gsub, "abc", "b", "%9"), outcome(pattern.gsub, "abc", "b", "%9"))
    assert.equals(outcome(string.gsub, "abc", "b", "%q"), outcome(pattern.gsub, "abc", "b", "%q"))
    assert.equals(outcome(string.gsub, "abc", "b", { b = {} }), outcome(pattern.gsub, "abc", "b", { b = {} }))
    assert.equals(
      outcome(string.find, ("a"):rep(300), ("a?"):rep(300)),
      outcome(pattern.find, ("a"):rep(300), ("a?"):rep(300))
    )
  end)

  it("stops a backtracking pattern with an error that names the bound", function()
    local subject = ("a"):rep(100000)
    local bound = tostring(pattern.STEPS + pattern.STEPS_PER_BYTE * #subject)
    for name, fn in pairs { find = pattern.find, match = pattern.match, gsub = pattern.gsub } do
      local ok, err = pcall(fn, subject, ("a*"):rep(20) .. "b", name == "gsub" and "" or nil)
      assert.is_false(ok)
      assert.matches("string." .. name .. ": pattern matching stopped after " .. bound .. " steps", err, 1, true)
    end
    local ok, err = pcall(pattern.gmatch(subject, "a*a*a*a*a*a*b"))
    assert.is_false(ok)
    assert.matches("string.gmatch: pattern matching stopped", err, 1, true)
    -- quadratic: a* then no b, from every start
    assert.is_false(pcall(pattern.find, subject, "a*b"))
  end)

  it("matches linear patterns on long subjects", function()
    local text = ("word "):rep(200000)
    assert.equals(200000, select(2, pattern.gsub(text, "%w+", "x")))
    assert.equals(#text, select(2, pattern.find(text, "^[%w ]*$")))
    local n = 0
    for _ in pattern.gmatch(text, "%a+") do
      n = n + 1
    end
    assert.equals(200000, n)
  end)
end)

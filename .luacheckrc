-- luacheck settings: Lua 5.4. The specs (tests/unit, tests/integration) get busted's globals; the
-- test tree may have long expected strings; its helpers (tests/lib), benchmarks and fixtures are
-- plain Lua 5.4.
std = "lua54"
max_line_length = 120
files["tests/"] = { max_line_length = false }
files["tests/unit/"] = { std = "+busted" }
files["tests/integration/"] = { std = "+busted" }

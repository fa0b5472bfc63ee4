-- luacheck settings: Lua 5.4; specs get busted's globals and may have long expected strings.
std = "lua54"
max_line_length = 120
files["tests/"] = { std = "+busted", max_line_length = false }
files["tests/fixtures/"] = { std = "lua54" }

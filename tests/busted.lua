-- Runs busted inside dconn, so specs see the native modules: dconn tests/busted.lua [busted args]
require("busted.runner")({ standalone = false })
